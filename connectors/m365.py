"""Microsoft 365 connector: Microsoft Graph over httpx with OAuth2 client credentials.

- Token from ``{authority_url}/{tenant_id}/oauth2/v2.0/token`` (scope ``{graph_url}/.default``),
  cached until shortly before ``expires_in``.
- Actions: ``send_mail`` (not idempotent, not compensable: mail cannot be unsent),
  ``post_channel_message`` ↔ ``delete_channel_message`` (softDelete), ``upload_file``
  (PUT by path: idempotent) ↔ ``delete_file``, ``list_files`` (``@odata.nextLink`` paging),
  ``download_file`` (base64, size-capped; feeds knowledge-base ingestion).
- Sync: ``drive_items`` of ``config.drive_id`` through ``/root/delta``; the checkpoint is the
  ``@odata.nextLink`` / ``@odata.deltaLink`` to call next.
- Redirects are never followed blindly: a download's 302 is followed only to the Graph host or
  a host ending in one of ``download_host_suffixes``.
"""

from __future__ import annotations

import base64
import builtins
import time
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, Field, SecretStr

from connectors.base import ActionSpec, ConnectorError, ErrorKind, StrictModel, SyncPage, SyncRecord
from connectors.http import HttpConnector, clip

_SEGMENT = r"^[A-Za-z0-9!._:@,-]{1,200}$"
TOKEN_SKEW_SECONDS = 60.0


class M365Config(StrictModel):
    """Non-secret settings."""

    tenant_id: str = Field(pattern=r"^[A-Za-z0-9.-]{1,100}$", description="Directory (tenant) id or domain")
    authority_url: str = Field("https://login.microsoftonline.com", description="Token authority host")
    graph_url: str = Field("https://graph.microsoft.com", description="Graph host")
    drive_id: str | None = Field(None, pattern=_SEGMENT, description="Drive synced as drive_items")
    max_download_bytes: int = Field(10 * 1024 * 1024, ge=1, le=200 * 1024 * 1024)
    download_host_suffixes: list[str] = Field(
        default_factory=lambda: [".sharepoint.com", ".1drv.com", ".svc.ms"],
        description="Hosts a download redirect may point to (besides the Graph host)",
    )
    timeout_seconds: float = Field(30.0, gt=0, le=300)


class M365Credentials(StrictModel):
    """App registration (client credentials)."""

    client_id: str
    client_secret: SecretStr


Segment = Field(pattern=_SEGMENT)


class SendMailInput(StrictModel):
    user: str = Field(pattern=_SEGMENT, description="Sender user id or UPN")
    to: list[str] = Field(min_length=1, max_length=100)
    subject: str = Field(max_length=255)
    body: str
    content_type: str = Field("Text", pattern="^(Text|HTML)$")
    save_to_sent_items: bool = True


class SendMailOutput(BaseModel):
    accepted: bool


class PostMessageInput(StrictModel):
    team_id: str = Segment
    channel_id: str = Segment
    content: str = Field(min_length=1)
    content_type: str = Field("text", pattern="^(text|html)$")


class MessageOutput(BaseModel):
    team_id: str
    channel_id: str
    message_id: str


class DeleteMessageInput(StrictModel):
    team_id: str = Segment
    channel_id: str = Segment
    message_id: str = Segment


class UploadFileInput(StrictModel):
    drive_id: str = Segment
    path: str = Field(min_length=1, max_length=400, pattern=r"^[^\\:*?\"<>|#%]+$")
    content_base64: str
    content_type: str = "application/octet-stream"


class FileOutput(BaseModel):
    drive_id: str
    item_id: str
    name: str = ""
    size: int = 0


class DeleteFileInput(StrictModel):
    drive_id: str = Segment
    item_id: str = Segment


class ListFilesInput(StrictModel):
    drive_id: str = Segment
    folder_item_id: str | None = Field(None, pattern=_SEGMENT, description="Folder; the root when omitted")
    top: int = Field(200, ge=1, le=999)
    next_link: str | None = None


class ListFilesOutput(BaseModel):
    items: list[dict[str, Any]]
    next_link: str | None


class DownloadFileInput(StrictModel):
    drive_id: str = Segment
    item_id: str = Segment


class DownloadFileOutput(BaseModel):
    item_id: str
    content_base64: str
    content_type: str
    size: int


class M365Connector(HttpConnector):
    """Microsoft Graph (mail, SharePoint/OneDrive files, Teams)."""

    type: ClassVar[str] = "m365"
    title: ClassVar[str] = "Microsoft 365"
    config_model: ClassVar[builtins.type[BaseModel]] = M365Config
    credentials_model: ClassVar[builtins.type[BaseModel]] = M365Credentials
    sync_objects: ClassVar[tuple[str, ...]] = ("drive_items",)
    actions: ClassVar[dict[str, ActionSpec]] = {
        "send_mail": ActionSpec(
            name="send_mail",
            title="Send mail",
            input_model=SendMailInput,
            output_model=SendMailOutput,
            idempotent=False,
            idempotency="Not idempotent: Graph sendMail has no idempotency key; a retry after a lost "
            "response can send twice (the key is added as header X-Nexus-Idempotency-Key for tracing)",
        ),
        "post_channel_message": ActionSpec(
            name="post_channel_message",
            title="Post Teams channel message",
            input_model=PostMessageInput,
            output_model=MessageOutput,
            idempotent=False,
            idempotency="Not idempotent: Graph has no idempotency key for chat messages",
            compensation="delete_channel_message",
            compensation_input=lambda i, o: {
                "team_id": o["team_id"],
                "channel_id": o["channel_id"],
                "message_id": o["message_id"],
            },
        ),
        "delete_channel_message": ActionSpec(
            name="delete_channel_message",
            title="Delete Teams channel message (softDelete)",
            input_model=DeleteMessageInput,
            output_model=MessageOutput,
            idempotent=True,
            idempotency="softDelete of a deleted message is a no-op",
        ),
        "upload_file": ActionSpec(
            name="upload_file",
            title="Upload file (replace by path)",
            input_model=UploadFileInput,
            output_model=FileOutput,
            idempotent=True,
            idempotency="PUT by drive path replaces the same item on every attempt",
            compensation="delete_file",
            compensation_input=lambda i, o: {"drive_id": o["drive_id"], "item_id": o["item_id"]},
        ),
        "delete_file": ActionSpec(
            name="delete_file",
            title="Delete file",
            input_model=DeleteFileInput,
            output_model=FileOutput,
            idempotent=True,
            idempotency="Deleting a missing item (404) counts as done",
        ),
        "list_files": ActionSpec(
            name="list_files",
            title="List files (one page)",
            input_model=ListFilesInput,
            output_model=ListFilesOutput,
            idempotent=True,
            idempotency="Read-only",
        ),
        "download_file": ActionSpec(
            name="download_file",
            title="Download file",
            input_model=DownloadFileInput,
            output_model=DownloadFileOutput,
            idempotent=True,
            idempotency="Read-only",
        ),
    }

    def __init__(self, config: BaseModel, credentials: BaseModel, **kw: Any) -> None:
        super().__init__(config, credentials, **kw)
        assert isinstance(config, M365Config)
        assert isinstance(credentials, M365Credentials)
        self.cfg, self.creds = config, credentials
        self._token: str | None = None
        self._token_expires = 0.0

    @classmethod
    def hosts(cls, config: BaseModel) -> list[str]:
        """The token authority and the Graph host."""
        assert isinstance(config, M365Config)
        return [config.authority_url, config.graph_url]

    def _graph(self, path: str) -> str:
        return self.cfg.graph_url.rstrip("/") + "/v1.0" + path

    def vendor_message(self, response: httpx.Response) -> str:
        """Graph ``error.code: error.message`` or the identity platform's ``error``."""
        body = response.json()
        if not isinstance(body, dict):
            return ""
        error = body.get("error")
        if isinstance(error, dict):
            return f"{error.get('code', '')}: {error.get('message', '')}"
        description = str(body.get("error_description", "")).split(".")[0]  # "AADSTS7000215: Invalid ..."
        return f"{error or ''}: {description}"

    async def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        url = f"{self.cfg.authority_url.rstrip('/')}/{self.cfg.tenant_id}/oauth2/v2.0/token"
        data = {
            "grant_type": "client_credentials",
            "client_id": self.creds.client_id,
            "client_secret": self.creds.client_secret.get_secret_value(),
            "scope": self.cfg.graph_url.rstrip("/") + "/.default",
        }
        try:
            response = await self.send(
                "POST", url, "token request", data=data, timeout=self.cfg.timeout_seconds
            )
        except ConnectorError as exc:
            if exc.status in (400, 401):  # invalid_client / invalid_grant / unknown tenant
                raise ConnectorError(exc.message, kind=ErrorKind.auth, status=exc.status) from None
            raise
        body = self.json_of(response, "token request")
        self._token = str(body["access_token"])
        self._token_expires = time.monotonic() + max(
            0.0, float(body.get("expires_in", 3599)) - TOKEN_SKEW_SECONDS
        )
        return self._token

    async def _call(self, method: str, url: str, what: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {await self._access_token()}", **kw.pop("headers", {})}
        try:
            return await self.send(method, url, what, headers=headers, timeout=self.cfg.timeout_seconds, **kw)
        except ConnectorError as exc:
            if exc.kind is ErrorKind.auth:
                self._token = None  # fetch a new token on the next attempt
            raise

    def _same_graph(self, link: str) -> str:
        if urlsplit(link).netloc != urlsplit(self.cfg.graph_url).netloc:
            raise ConnectorError("a Graph paging link points to another host", kind=ErrorKind.validation)
        return link

    async def test(self) -> None:
        """Get a token, then list one item of the configured drive (or just the token)."""
        await self._access_token()
        if self.cfg.drive_id:
            await self._call(
                "GET", self._graph(f"/drives/{self.cfg.drive_id}/root/children"), "test", params={"$top": 1}
            )

    async def run_action(self, name: str, payload: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Run one declared action (see ``actions``)."""
        spec, data = self.parse_input(name, payload)
        if isinstance(data, SendMailInput):
            message = {
                "subject": data.subject,
                "body": {"contentType": data.content_type, "content": data.body},
                "toRecipients": [{"emailAddress": {"address": a}} for a in data.to],
                "internetMessageHeaders": [
                    {"name": "X-Nexus-Idempotency-Key", "value": idempotency_key[:200]}
                ],
            }
            body = {"message": message, "saveToSentItems": data.save_to_sent_items}
            await self._call(
                "POST", self._graph(f"/users/{quote(data.user)}/sendMail"), "send mail", json=body
            )
            return self.finish(spec, {"accepted": True})
        if isinstance(data, PostMessageInput):
            url = self._graph(f"/teams/{data.team_id}/channels/{data.channel_id}/messages")
            body = {"body": {"contentType": data.content_type, "content": data.content}}
            msg = self.json_of(await self._call("POST", url, "post message", json=body), "post message")
            return self.finish(
                spec, {"team_id": data.team_id, "channel_id": data.channel_id, "message_id": msg["id"]}
            )
        if isinstance(data, DeleteMessageInput):
            url = self._graph(
                f"/teams/{data.team_id}/channels/{data.channel_id}/messages/{data.message_id}/softDelete"
            )
            await self._call("POST", url, "delete message")
            return self.finish(spec, data.model_dump())
        if isinstance(data, UploadFileInput):
            try:
                content = base64.b64decode(data.content_base64, validate=True)
            except ValueError:
                raise ConnectorError(
                    "content_base64 is not valid base64", kind=ErrorKind.validation
                ) from None
            path = quote(data.path.strip("/"))
            url = self._graph(f"/drives/{data.drive_id}/root:/{path}:/content")
            item = self.json_of(
                await self._call(
                    "PUT", url, "upload file", content=content, headers={"Content-Type": data.content_type}
                ),
                "upload file",
            )
            return self.finish(
                spec,
                {
                    "drive_id": data.drive_id,
                    "item_id": item["id"],
                    "name": item.get("name", ""),
                    "size": item.get("size", 0),
                },
            )
        if isinstance(data, DeleteFileInput):
            try:
                await self._call(
                    "DELETE", self._graph(f"/drives/{data.drive_id}/items/{data.item_id}"), "delete file"
                )
            except ConnectorError as exc:
                if exc.kind is not ErrorKind.not_found:
                    raise
            return self.finish(spec, {"drive_id": data.drive_id, "item_id": data.item_id})
        if isinstance(data, ListFilesInput):
            if data.next_link is not None:
                response = await self._call("GET", self._same_graph(data.next_link), "list files")
            else:
                folder = f"items/{data.folder_item_id}" if data.folder_item_id else "root"
                url = self._graph(f"/drives/{data.drive_id}/{folder}/children")
                response = await self._call("GET", url, "list files", params={"$top": data.top})
            body = self.json_of(response, "list files")
            return self.finish(
                spec, {"items": body.get("value", []), "next_link": body.get("@odata.nextLink")}
            )
        assert isinstance(data, DownloadFileInput)
        return self.finish(spec, await self._download(data))

    async def _download(self, data: DownloadFileInput) -> dict[str, Any]:
        url = self._graph(f"/drives/{data.drive_id}/items/{data.item_id}/content")
        response = await self._call("GET", url, "download file", ok=(302,))
        if response.status_code == 302:
            location = response.headers.get("Location", "")
            host = urlsplit(location).hostname or ""
            graph_host = urlsplit(self.cfg.graph_url).hostname
            if urlsplit(location).scheme not in ("https", "http") or not (
                host == graph_host or host.endswith(tuple(self.cfg.download_host_suffixes))
            ):
                raise ConnectorError("download redirect to a host that is not allowed", kind=ErrorKind.config)
            # the pre-authenticated download URL must not receive the bearer token
            response = await self.send("GET", location, "download file", timeout=self.cfg.timeout_seconds)
        content = response.content
        if len(content) > self.cfg.max_download_bytes:
            raise ConnectorError(
                f"file is larger than max_download_bytes ({self.cfg.max_download_bytes})",
                kind=ErrorKind.validation,
            )
        return {
            "item_id": data.item_id,
            "content_base64": base64.b64encode(content).decode(),
            "content_type": response.headers.get("Content-Type", "application/octet-stream"),
            "size": len(content),
        }

    async def read_page(self, obj: str, checkpoint: dict[str, Any] | None, page_size: int) -> SyncPage:
        """Drive items changed since the checkpoint (Graph delta: the checkpoint is the next link)."""
        self.check_sync_object(obj)
        if not self.cfg.drive_id:
            raise ConnectorError("set drive_id in the M365 config to sync drive_items", kind=ErrorKind.config)
        try:
            if checkpoint:
                link = str(checkpoint.get("link", ""))
                response = await self._call("GET", self._same_graph(link), "sync drive items")
            else:
                url = self._graph(f"/drives/{self.cfg.drive_id}/root/delta")
                response = await self._call("GET", url, "sync drive items", params={"$top": page_size})
        except ConnectorError as exc:
            if exc.status == 410:  # resyncRequired: the delta token expired
                raise ConnectorError(
                    "the delta link expired: restart the sync", kind=ErrorKind.conflict
                ) from None
            raise
        body = self.json_of(response, "sync drive items")
        records = [
            SyncRecord(
                external_id=str(item["id"]),
                modified_at=datetime.fromisoformat(
                    str(item.get("lastModifiedDateTime", "1970-01-01T00:00:00Z")).replace("Z", "+00:00")
                ),
                data=item,
            )
            for item in body.get("value", [])
        ]
        next_link = body.get("@odata.nextLink")
        delta_link = body.get("@odata.deltaLink")
        link = next_link or delta_link
        if not link:
            raise ConnectorError(
                f"Graph delta answered without a next or delta link: {clip(str(list(body)))}",
                kind=ErrorKind.unavailable,
            )
        return SyncPage(records=records, checkpoint={"link": link}, has_more=next_link is not None)
