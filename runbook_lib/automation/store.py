"""Where finished run folders land: a local folder (the default) or an S3 bucket (boto3).

A store keeps each run under ``<incident id>/<job id>/``: the run folder as ``runbook run`` left it, plus
``automation.json`` (the alert, the attempts, the resolution) and ``runbook.log`` (the command's output).
``--store`` is a path (``runs/automated``, relative to the project root) or ``s3://bucket/prefix``; S3
credentials come from the usual AWS chain, never from the runbook's settings, and ``--s3-endpoint-url`` (or
``AWS_ENDPOINT_URL``) points boto3 at another S3 (a moto server in the tests). ``--link-base`` turns a stored
path into the link a notification carries (a web front end to the folder or bucket).
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runbook_lib.automation.automation_errors import StoreError
from runbook_lib.redaction import redact_text


@dataclass(frozen=True)
class Stored:
    uri: str       # where the run folder is: a path or s3://bucket/key/
    link: str      # what a reader opens: the postmortem (or the folder when the run has none)


class LocalStore:
    def __init__(self, root: Path, link_base: str | None = None):
        self.root = root
        self.link_base = link_base.rstrip("/") if link_base else None

    def describe(self) -> str:
        return str(self.root)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as e:
            raise StoreError(f"store folder {self.root}: cannot write it ({e.strerror})") from None

    def put_run(self, run_dir: Path, key: str) -> Stored:
        dest = self.root / key
        tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(run_dir, tmp, ignore=shutil.ignore_patterns(".run.lock", "*.tmp"))
            if dest.exists():  # a finished job stored again (its worker died before saying so)
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot store the run in {dest}: {e.strerror or e}") from None
        return Stored(uri=str(dest), link=self.link(key, _postmortem(run_dir)))

    def put_file(self, key: str, name: str, data: bytes) -> None:
        path = self.root / key / name
        if not path.parent.is_dir():
            raise StoreError(f"{path.parent} is not a stored run")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_file(self, key: str, name: str) -> bytes | None:
        path = self.root / key / name
        return path.read_bytes() if path.is_file() else None

    def link(self, key: str, name: str) -> str:
        if self.link_base:
            return f"{self.link_base}/{key}/{name}".rstrip("/")
        return (self.root / key / name).as_uri() if name else (self.root / key).as_uri()


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 link_base: str | None = None):
        import boto3  # only for an S3 store: boto3 takes ~0.3 s to import

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.link_base = link_base.rstrip("/") if link_base else None
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url or None)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, key, name) if p)

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"S3 bucket {self.bucket}: {redact_text(str(e))}") from None

    def put_run(self, run_dir: Path, key: str) -> Stored:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
                if path.name == ".run.lock" or path.name.endswith(".tmp"):
                    continue
                rel = path.relative_to(run_dir).as_posix()
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self.s3.upload_file(str(path), self.bucket, self._key(key, rel), ExtraArgs={"ContentType": kind})
        except (BotoCoreError, ClientError, OSError) as e:
            raise StoreError(f"cannot store the run in {self.describe()}/{key}: {redact_text(str(e))}") from None
        return Stored(uri=f"s3://{self.bucket}/{self._key(key)}/", link=self.link(key, _postmortem(run_dir)))

    def put_file(self, key: str, name: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key, name), Body=data)
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"cannot write {name} to {self.describe()}/{key}: {redact_text(str(e))}") from None

    def get_file(self, key: str, name: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key, name))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def link(self, key: str, name: str) -> str:
        if self.link_base:
            return f"{self.link_base}/{self._key(key, name)}"
        return f"s3://{self.bucket}/{self._key(key, name)}"


def _postmortem(run_dir: Path) -> str:
    """The file a reader opens first: the postmortem when the run exported one."""
    for name in ("postmortem.html", "postmortem.md"):
        if (run_dir / name).is_file():
            return name
    return ""


def open_store(spec: str, root: Path, endpoint_url: str | None = None, link_base: str | None = None):
    """``s3://bucket/prefix`` or a folder (relative to ``root``, the project root)."""
    if spec.startswith("s3://"):
        parts = urlsplit(spec)
        if not parts.netloc:
            raise StoreError(f"store {spec!r} names no bucket", hint="write s3://bucket or s3://bucket/prefix")
        return S3Store(parts.netloc, parts.path, endpoint_url, link_base)
    if "://" in spec and not spec.startswith("file://"):
        raise StoreError(f"store {spec!r}: only a folder or s3://bucket/prefix")
    path = Path(spec.removeprefix("file://")).expanduser()
    return LocalStore(path if path.is_absolute() else root / path, link_base)
