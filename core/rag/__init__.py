"""Knowledge bases: parsing, chunking, embedding, storage and hybrid retrieval with citations."""
