"""FirestoreDedupStore: one document per dedup key, written with precondition-guarded writes.

A claim is one ``create()`` (fails if the document exists). Completion and release write or delete the
document only if it is unchanged since the claim wrote it (a ``last_update_time`` precondition with the
claim's update time, kept in process), so a slow first run cannot overwrite its successor's record; when
that time is not known here, or the precondition fails, they read the document and check its owner first.
No VPC connector and no server to pay for while idle: the serverless choice on Cloud Run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

try:
    from google.api_core import exceptions as api_exceptions
    from google.api_core.retry import Retry, if_transient_error
    from google.auth.exceptions import GoogleAuthError
    from google.cloud import firestore
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "FirestoreDedupStore needs google-cloud-firestore: pip install 'tasktoolkit[firestore]'"
    ) from exc

from tasktoolkit.dedup.base import DedupRecord, DedupStatus, DedupStore, StoredResponse, check_duration
from tasktoolkit.errors import DedupStoreUnavailable

DEFAULT_COLLECTION = "tasktoolkit_dedup"
#: Budget of one store operation, retries included: fail fast so the handler answers 503 quickly.
DEFAULT_TIMEOUT_S = 2.0
#: Name of the Timestamp field to give a TTL policy (deletion is lazy: every read checks it too).
TTL_FIELD = "expires_at"
#: Conditional writes that lost a race are tried again on a fresh read at most this many times.
_MAX_RACES = 8
#: Firestore's limit on the size of one document.
MAX_DOCUMENT_BYTES = 1_048_576
#: Room kept in a document for everything but the key and the response body (field names, other values,
#: the document's name).
_RECORD_OVERHEAD_BYTES = 1024
#: Claims whose update time is kept for a one-write completion (the oldest are forgotten first).
MAX_REMEMBERED_CLAIMS = 10_000


def document_id(key: str) -> str:
    """The document id of a dedup key: its sha256 in hex (ids cannot hold '/' and are limited in length)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def max_body_bytes(key: str) -> int:
    """The largest response body a record of ``key`` can store in one Firestore document."""
    return MAX_DOCUMENT_BYTES - _RECORD_OVERHEAD_BYTES - len(key.encode("utf-8"))


def _fields(record: DedupRecord) -> dict[str, Any]:
    response = record.response
    if response is not None and len(response.body) > max_body_bytes(record.key):
        raise DedupStoreUnavailable(
            f"response_body of {len(response.body)} bytes cannot be stored: a Firestore document holds at "
            f"most 1 MiB, so a body for this key may be 0 to {max_body_bytes(record.key)} bytes"
        )
    return {
        "key": record.key,
        "owner": record.owner,
        "status": record.status.value,
        "fingerprint": record.fingerprint,
        # The store's clock, exactly; the Timestamp below is what a TTL policy deletes by.
        "expires_at_s": record.expires_at,
        TTL_FIELD: dt.datetime.fromtimestamp(record.expires_at, dt.UTC),
        "response_status": response.status if response else None,
        "response_body": response.body if response else None,
        "response_content_type": response.content_type if response else None,
    }


def _record(key: str, data: dict[str, Any]) -> DedupRecord:
    status = data.get("response_status")
    body = bytes(data.get("response_body") or b"")
    content_type = data.get("response_content_type")
    response = StoredResponse(int(status), body, content_type) if status is not None else None
    return DedupRecord(
        key=key,
        status=DedupStatus(data["status"]),
        owner=data["owner"],
        fingerprint=data["fingerprint"],
        expires_at=float(data["expires_at_s"]),
        response=response,
    )


class FirestoreDedupStore(DedupStore):
    """Dedup records as Firestore documents (Native mode), one per key, in one collection.

    Costs per delivery: a claim is one write (a ``create``), a duplicate's claim adds one read, and
    completion or release in the process that claimed is one conditional write (elsewhere, or after a lost
    race, one read more). Records carry an ``expires_at`` Timestamp for a TTL policy; every read also checks
    expiry against the store's clock, since TTL deletion is lazy.

    Args:
        project: Google Cloud project; None takes it from the environment (Application Default
            Credentials, or ``GOOGLE_CLOUD_PROJECT``).
        collection: Collection of the dedup documents.
        database: Firestore database id.
        timeout_s: Budget of one operation, retries of transient errors included.
        client: A ``google.cloud.firestore.Client`` to use instead of making one (then ``project`` and
            ``database`` are ignored).
        clock: Seconds since the epoch (injectable for tests).
    """

    _unavailable_errors = (api_exceptions.GoogleAPIError, GoogleAuthError)

    def __init__(
        self,
        project: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        *,
        database: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: firestore.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        if not collection or "/" in collection:
            raise ValueError(f"collection must be one collection id, non-empty, without '/': {collection!r}")
        self.project = project
        self.collection = collection
        self.database = database
        self.timeout_s = check_duration("timeout_s", timeout_s)
        self._retry = self._transient_retry()
        self._given_client = client
        self._client: firestore.Client | None = client
        self._client_pid = os.getpid()
        self._lock = threading.Lock()
        #: owner token -> (update time of the claim's write, end of its lease)
        self._claims: OrderedDict[str, tuple[Any, float]] = OrderedDict()

    def _transient_retry(self, on_error: Callable[[Exception], None] | None = None) -> Retry:
        """Retries transient errors within the operation's budget, telling ``on_error`` of each one."""
        return Retry(
            predicate=if_transient_error,
            initial=0.01,
            maximum=0.2,
            multiplier=2.0,
            timeout=self.timeout_s,
            on_error=on_error,
        )

    def _remember(self, record: DedupRecord, update_time: Any) -> None:
        with self._lock:
            self._claims[record.owner] = (update_time, record.expires_at)
            if len(self._claims) > MAX_REMEMBERED_CLAIMS:
                self._claims.popitem(last=False)

    def _recall(self, owner: str) -> tuple[Any, float] | None:
        with self._lock:
            return self._claims.pop(owner, None)

    def _collection(self) -> Any:
        """The collection reference, on a client made in this process (gRPC channels do not survive fork)."""
        if self._given_client is None and (self._client is None or self._client_pid != os.getpid()):
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = firestore.Client(project=self.project, database=self.database)
                    self._client_pid = os.getpid()
        assert self._client is not None
        return self._client.collection(self.collection)

    def _call_options(self) -> dict[str, Any]:
        return {"retry": self._retry, "timeout": self.timeout_s}

    def _read(self, key: str) -> tuple[Any, DedupRecord | None]:
        """Returns the document's snapshot (its reference and update time) and its record (None if absent)."""
        ref = self._collection().document(document_id(key))
        snapshot = ref.get(**self._call_options())
        return snapshot, (_record(key, snapshot.to_dict()) if snapshot.exists else None)

    def _claim(self, record: DedupRecord, now: float) -> DedupRecord | None:
        ref = self._collection().document(document_id(record.key))
        fields = _fields(record)
        try:
            self._remember(record, ref.create(fields, **self._call_options()).update_time)
            return None
        except api_exceptions.Conflict:
            pass
        for _ in range(_MAX_RACES):
            snapshot, current = self._read(record.key)
            if current is not None and current.owner == record.owner:
                return None  # our create landed; its answer was lost and the retry saw the document
            if current is not None and now < current.expires_at:
                return current
            try:
                if current is None:
                    result = ref.create(fields, **self._call_options())
                else:  # expired: replace it unless another claim got there first
                    option = firestore.Client.write_option(last_update_time=snapshot.update_time)
                    result = ref.update(fields, option=option, **self._call_options())
                self._remember(record, result.update_time)
                return None
            except (api_exceptions.Conflict, api_exceptions.FailedPrecondition, api_exceptions.NotFound):
                continue
        raise DedupStoreUnavailable(f"claim of {record.key!r} lost {_MAX_RACES} races in a row")

    def _settle(self, key: str, owner: str, now: float, record: DedupRecord | None) -> bool:
        """Replaces (or deletes, when ``record`` is None) the live IN_PROGRESS record of ``owner``."""
        claimed = self._recall(owner)
        retried: list[Exception] = []  # transient errors of our writes: each may hide a write that landed
        if claimed is not None and now < claimed[1]:
            # Unchanged since our claim wrote it: still ours, still IN_PROGRESS, lease not over.
            try:
                self._write(self._collection().document(document_id(key)), claimed[0], record, retried)
                return True
            except (api_exceptions.FailedPrecondition, api_exceptions.NotFound):
                pass  # changed since (or our own write landed and a retry saw it): read and decide
        for _ in range(_MAX_RACES):
            snapshot, current = self._read(key)
            if current is None:
                # Gone after a delete of ours that was retried: it landed, its answer was lost.
                return record is None and bool(retried)
            if current.owner != owner:
                return False
            if current.status is not DedupStatus.IN_PROGRESS or now >= current.expires_at:
                return record is not None and current == record  # our own write whose answer was lost
            try:
                self._write(snapshot.reference, snapshot.update_time, record, retried)
                return True
            except (api_exceptions.FailedPrecondition, api_exceptions.NotFound):
                continue
        raise DedupStoreUnavailable(f"settling {key!r} lost {_MAX_RACES} races in a row")

    def _write(
        self, ref: Any, update_time: Any, record: DedupRecord | None, retried: list[Exception]
    ) -> None:
        """Updates (or deletes, when ``record`` is None) ``ref`` if it was last written at ``update_time``.

        Appends to ``retried`` each transient error that was retried.
        """
        option = firestore.Client.write_option(last_update_time=update_time)
        options = {"retry": self._transient_retry(retried.append), "timeout": self.timeout_s}
        if record is None:
            ref.delete(option=option, **options)
        else:
            ref.update(_fields(record), option=option, **options)

    def _replace(self, record: DedupRecord, now: float) -> bool:
        return self._settle(record.key, record.owner, now, record)

    def _delete(self, key: str, owner: str, now: float) -> bool:
        return self._settle(key, owner, now, None)

    def _get(self, key: str, now: float) -> DedupRecord | None:
        _snapshot, current = self._read(key)
        return current if current is not None and now < current.expires_at else None

    def close(self) -> None:
        """Closes the client's channel if this store made the client."""
        if self._given_client is None and self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
