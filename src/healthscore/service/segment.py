"""The Segment-compatible routes: `/v1/batch`, `/v1/track`, `/v1/identify`, `/v1/group`.

Place in the flow: a router of ``service/``; Segment messages become rows of the
canonical tables, through the same checks as ``POST /v1/ingest/{table}``
(:func:`healthscore.sources.rows.check_rows`) and :meth:`healthscore.store.Store.append`,
or are parked (:mod:`healthscore.service.parked`): refused, or pending until `group`
links their user to an account.

Segment's semantics, not ours: a request that is well formed and authorised gets 200
whatever its messages hold (an official client would otherwise retry a batch forever);
each message is taken, parked as pending, or parked as rejected with the reason. The
write key is a token with the ``segment`` scope, sent as the HTTP Basic user name.

Mapping (the service's "now" is ``receivedAt``):

- ``group`` (userId, groupId): the user belongs to account ``groupId``: a ``users`` row
  (user_id, account_id; a stored created_at is kept); the user's pending messages are
  then attributed;
- ``identify`` (userId, traits.createdAt): the user's ``users.created_at`` (other traits
  have no canonical column and are not kept); pending until the user is grouped;
- ``track``: a new ``usage_events`` row: event_id = messageId (a message whose
  messageId is already an event there, re-sent or not, changes nothing), user_id =
  userId, event = event, quantity = properties.quantity, account = the user's, and ts =
  timestamp + (receivedAt - sentAt), the client's clock skew removed; pending until the
  user is grouped.

Refused (parked in ``ingest_rejects``): a message that is not an object, of another
type (page, screen, alias), without userId (or a group without groupId, a track without
event), with a time that does not parse, outside the years 1900-2999 (once corrected for the
sender's clock), more than a day after it was received, with an
id or event name of more than 1,000 characters (or a NUL character), naming a key twice
(``{"userId": "a", "userId": "b"}``: which one it meant is not ours to guess), with text no store
can keep (an unpaired surrogate, see :mod:`healthscore.service.text`) in a field it uses,
or with values the canonical table's checks refuse (the reason says which).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from healthscore.core.limits import MAX_ID_CHARS, MAX_YEAR, MIN_YEAR, NUL
from healthscore.errors import Problem
from healthscore.service import auth, parked
from healthscore.service.bodies import TWICE, Twice, twice
from healthscore.service.ingest import IngestError, json_body, read_json
from healthscore.service.text import REASON, readable, unpaired

router = APIRouter(prefix="/v1", tags=["segment"])

#: how far after its receipt a message's time may be (a clock set wrong beyond it)
MAX_FUTURE = timedelta(days=1)
TYPES = ("track", "identify", "group")


def write_key(request: Request) -> auth.Token:
    """A dependency: the Segment write key (HTTP Basic user name), a token with the
    ``segment`` scope. 401 without a valid one, 403 when it lacks the scope."""
    state = request.app.state.service
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    text = None
    if scheme.lower() == "basic":
        try:
            text = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            text = None
    challenge = {"WWW-Authenticate": 'Basic realm="healthscore"'}
    if not text:
        raise HTTPException(401, "a write key is needed (the HTTP Basic user)", headers=challenge)
    token = auth.cached_token(state.store, text)
    if token is None:
        with state.store_access() as store:
            token = auth.verify_token(store, text)
    if token is None:
        raise HTTPException(401, "the write key is unknown, revoked or expired", headers=challenge)
    if not token.allows("segment"):
        raise HTTPException(403, f"token {token.name!r} does not allow segment")
    return token


_MESSAGE = {"type": "object", "additionalProperties": True}
BATCH_BODY = json_body(
    {
        "type": "object",
        "required": ["batch"],
        "properties": {"batch": {"type": "array", "items": _MESSAGE}, "sentAt": {"type": "string"}},
    },
    {"batch": [{"type": "track", "userId": "user-17", "event": "report_viewed",
                "messageId": "m-1", "timestamp": "2025-06-30T09:15:00Z"}],
     "sentAt": "2025-06-30T09:15:01Z"},
)  # fmt: skip
MESSAGE_BODY = json_body(_MESSAGE, {"userId": "user-17", "groupId": "ACC-00102"})


@router.post("/batch", openapi_extra=BATCH_BODY)
async def batch(request: Request, token: auth.Token = Depends(write_key)) -> dict:
    """Segment's batch: ``{"batch": [message, ...], "sentAt": ...}`` (what the official
    clients send)."""
    state = request.app.state.service
    body = await read_json(request, state.settings)
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise IngestError('the body must be a JSON object {"batch": [...]}')
    if isinstance(body, Twice):  # which batch, which sentAt: the request as a whole
        raise IngestError(f"the body's {body.names[0]!r} is {TWICE}")
    messages = body["batch"]
    if len(messages) > state.settings.max_batch_rows:
        raise IngestError(
            f"{len(messages):,} messages in one batch; at most {state.settings.max_batch_rows:,}",
            status=413,
        )
    await run_in_threadpool(take, state, messages, body.get("sentAt"))
    return {"success": True}


async def _single(request: Request, kind: str) -> dict:
    state = request.app.state.service
    message = await read_json(request, state.settings)
    if not isinstance(message, dict):
        raise IngestError("the body must be a JSON object (one message)")
    typed = {**message, "type": kind}
    if isinstance(message, Twice):  # parked as such by normalise
        typed = Twice(typed)
        typed.names = message.names
    message = typed
    await run_in_threadpool(take, state, [message], message.get("sentAt"))
    return {"success": True}


@router.post("/track", openapi_extra=MESSAGE_BODY)
async def track(request: Request, token: auth.Token = Depends(write_key)) -> dict:
    """One Segment ``track`` message."""
    return await _single(request, "track")


@router.post("/identify", openapi_extra=MESSAGE_BODY)
async def identify(request: Request, token: auth.Token = Depends(write_key)) -> dict:
    """One Segment ``identify`` message."""
    return await _single(request, "identify")


@router.post("/group", openapi_extra=MESSAGE_BODY)
async def group(request: Request, token: auth.Token = Depends(write_key)) -> dict:
    """One Segment ``group`` message."""
    return await _single(request, "group")


# --- messages -------------------------------------------------------------------------


class Refused(Exception):
    """Why a message is parked in the rejects."""


@dataclass
class Message:
    """A message as the service uses it: its time corrected, its fields checked."""

    type: str
    message_id: str
    user_id: str
    ts: datetime
    event: str | None = None
    quantity: object = None
    group_id: str | None = None
    created_at: object = None
    raw: dict = field(default_factory=dict, repr=False)

    def pending(self) -> dict:
        """What the pending table keeps of it (enough to attribute it later)."""
        return {
            "type": self.type,
            "messageId": self.message_id,
            "userId": self.user_id,
            "ts": self.ts.isoformat(),
            "event": self.event,
            "quantity": self.quantity,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_pending(cls, row: dict) -> Message:
        m = json.loads(row["message"])
        return cls(
            m["type"],
            m["messageId"],
            m["userId"],
            datetime.fromisoformat(m["ts"]),
            m.get("event"),
            m.get("quantity"),
            None,
            m.get("createdAt"),
            m,
        )


def message_id(raw) -> str:
    """The message's ``messageId``; one derived from its content when it has none (the
    same message sent again gets the same id)."""
    if isinstance(raw, dict) and isinstance(raw.get("messageId"), str | int):
        given = str(raw["messageId"])
        if NUL not in given and len(given) <= MAX_ID_CHARS and not unpaired(given):
            # else (refused by normalise) one the store can keep
            return given
    text = json.dumps(
        {k: v for k, v in raw.items() if k != "sentAt"} if isinstance(raw, dict) else raw,
        sort_keys=True,
        default=str,
    )
    return "md5-" + hashlib.md5(text.encode()).hexdigest()


def _time(raw: dict, key: str) -> datetime | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        t = None
    if t is None:
        raise Refused(f"{key}: not an ISO 8601 time (got {value!r})")
    try:
        return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first day there is in UTC
        raise Refused(f"{key}: out of range once in UTC (got {value!r})") from None


def _text(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if NUL in str(value):
        raise Refused(f"{key}: holds a NUL character (U+0000), which no text value may hold")
    _storable(value, key)
    if len(str(value)) > MAX_ID_CHARS:
        raise Refused(
            f"{key}: {len(str(value)):,} characters; an id or event name is at most "
            f"{MAX_ID_CHARS:,}"
        )
    return str(value).strip() or None


def _storable(value, key: str) -> None:
    """Refuse text no store can keep (see :mod:`healthscore.service.text`)."""
    if isinstance(value, str) and unpaired(value):
        raise Refused(f"{key}: {REASON}")


def normalise(raw, sent_at: str | None, received: datetime) -> Message:
    """A received message checked and its time corrected; :class:`Refused` says why not."""
    if not isinstance(raw, dict):
        raise Refused("a message must be a JSON object")
    where = twice(raw)
    if where:  # which of the two values it meant is not ours to guess
        raise Refused(f"{where}: {TWICE}")
    kind = raw.get("type")
    if kind not in TYPES:
        raise Refused(f"type {kind!r} is not used (healthscore takes {', '.join(TYPES)})")
    user = _text(raw, "userId")
    if user is None:
        raise Refused(
            "no userId: healthscore attributes messages by user (anonymous ones are not kept)"
        )
    timestamp = _time(raw, "timestamp") or _time(raw, "originalTimestamp")
    sent = _time({"sentAt": raw.get("sentAt", sent_at)}, "sentAt")
    try:
        ts = (
            received
            if timestamp is None
            else timestamp + (received - sent if sent else timedelta())
        )
    except OverflowError:
        raise Refused("timestamp: out of range") from None
    if not MIN_YEAR <= ts.year <= MAX_YEAR:  # else pending until its user is linked, and
        # refused only then, by the table's check: never a message that could be taken
        raise Refused(
            f"timestamp {ts.isoformat()} (corrected for the sender's clock) is out of "
            f"range: times must lie in the years {MIN_YEAR} to {MAX_YEAR}"
        )
    if ts > received + MAX_FUTURE:
        raise Refused(
            f"timestamp {ts.isoformat()} (corrected for the sender's clock) is more than "
            f"1 day after it was received ({received.isoformat()})"
        )
    _text(raw, "messageId")  # refused when it holds a NUL or is too long
    m = Message(kind, message_id(raw), user, ts, raw=raw)
    if kind == "track":
        m.event = _text(raw, "event")
        if m.event is None:
            raise Refused("track without an event name (`event`)")
        props = raw.get("properties")
        m.quantity = props.get("quantity") if isinstance(props, dict) else None
        _storable(m.quantity, "properties.quantity")
    elif kind == "group":
        m.group_id = _text(raw, "groupId")
        if m.group_id is None:
            raise Refused("group without a groupId (the account_id)")
    else:
        traits = raw.get("traits")
        if isinstance(traits, dict):
            m.created_at = traits.get("createdAt", traits.get("created_at"))
            _storable(m.created_at, "traits.createdAt")
    return m


# --- taking a batch ---------------------------------------------------------------------


@dataclass
class _Outcome:
    rejects: list[dict] = field(default_factory=list)
    pending: list[dict] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # message ids written (or unchanged)
    touched: set[str] = field(default_factory=set)


def _type_text(raw) -> str | None:
    """A refused message's ``type`` as its parked row keeps it: text (cut, and with any
    unpaired surrogate replaced) or, for anything else (a list, an object), its JSON."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind is None:
        return None
    text = kind if isinstance(kind, str) else parked.message_text(kind)
    return readable(text[:MAX_ID_CHARS])


def take(state, messages: list, sent_at: str | None) -> None:
    """Write what the messages say, park the rest; mark the accounts changed."""
    received = state.now()
    out = _Outcome()

    def refuse(raw, reason: str, kind=None) -> None:
        out.rejects.append(
            {
                "message_id": message_id(raw),
                "type": kind or _type_text(raw),
                "received_at": received,
                "reason": reason,
                "message": parked.message_text(raw),
            }
        )

    found: dict[str, Message] = {}
    for raw in messages:
        try:
            m = normalise(raw, sent_at, received)
        except Refused as e:
            refuse(raw, str(e))
            continue
        found.setdefault(m.message_id, m)  # the same message twice in a batch: once
    msgs = list(found.values())
    with state.store_access() as store:
        parked.ensure_tables(store)
        with store.transaction():
            linked = _group(store, [m for m in msgs if m.type == "group"], out, refuse)
            released = [Message.from_pending(r) for r in parked.pending_for(store, sorted(linked))]
            was_pending = {m.message_id for m in released}
            # a message sent again while pending: the one just received
            others = {m.message_id: m for m in released}
            others |= {m.message_id: m for m in msgs if m.type != "group"}
            others = list(others.values())
            accounts = _accounts(store, sorted({m.user_id for m in others}))
            ready = []
            for m in others:
                if m.user_id in accounts:
                    ready.append((m, accounts[m.user_id]))
                elif m.message_id not in was_pending:
                    out.pending.append(
                        {
                            "message_id": m.message_id,
                            "type": m.type,
                            "received_at": received,
                            "user_id": m.user_id,
                            "message": json.dumps(m.pending(), default=str),
                        }
                    )
            _track(store, [(m, a) for m, a in ready if m.type == "track"], out, refuse)
            _identify(store, [(m, a) for m, a in ready if m.type == "identify"], out, refuse)
            parked.release(store, parked.PENDING, sorted(was_pending))
            parked.release(store, parked.REJECTS, out.done)
            parked.park(store, parked.PENDING, out.pending)
            parked.park(store, parked.REJECTS, out.rejects)
    state.touched(out.touched)


def _accounts(store, users: list[str]) -> dict[str, str]:
    """The account each of these users belongs to (by the users table)."""
    if not users:
        return {}
    t = store.table("users")
    t = t.filter(t.user_id.isin(users) & t.account_id.notnull()).select("user_id", "account_id")
    found = store.execute(t)
    return dict(zip(found["user_id"].to_pylist(), found["account_id"].to_pylist(), strict=True))


def _write(store, table: str, items: list, rows: list[dict], out: _Outcome, refuse) -> None:
    """Check ``rows`` (one per item of ``items``, a message) as ``POST /v1/ingest``
    does; refuse the messages of invalid rows, append the rest."""
    from healthscore.sources.rows import check_rows, row_problems

    bad: dict[int, list[str]] = {}

    def note(problems: list[Problem], index: list[int]) -> None:
        for p in problems:
            text = Problem(p.reason, column=p.column, got=p.got, expected=p.expected)
            bad.setdefault(index[p.row], []).append(f"{table}: {text}")

    # values no row may hold (a list, an object, a number that is not finite) first: a
    # batch of only such rows is refused whole by check_rows, and a message is parked,
    # never lost with the request
    note(row_problems(rows), list(range(len(rows))))
    index = [i for i in range(len(rows)) if i not in bad]
    if index:
        with check_rows([rows[i] for i in index], table, allow_rejects=True) as batch:
            note(batch.rejects, index)
            data = batch.data.read_all()
            if data.num_rows:
                result = store.append(table, data, columns=batch.supplied)
                out.touched.update(result.accounts)
    for i, reasons in bad.items():
        m = items[i]
        refuse(m.raw, "; ".join(reasons), m.type)
    out.done += [m.message_id for i, m in enumerate(items) if i not in bad]


def _group(store, groups: list[Message], out: _Outcome, refuse) -> set[str]:
    """Link users to accounts; the users linked."""
    items = _last_per_user(groups, out)
    rows = [{"user_id": m.user_id, "account_id": m.group_id} for m in items]
    _write(store, "users", items, rows, out, refuse)
    done = set(out.done)
    return {m.user_id for m in items if m.message_id in done}


def _last_per_user(msgs: list, out: _Outcome) -> list:
    """One message per user (the last; the earlier ones are done, superseded)."""
    latest = {m.user_id: m for m in msgs}
    keep = {id(m) for m in latest.values()}
    out.done += [m.message_id for m in msgs if id(m) not in keep]
    return list(latest.values())


def _track(store, ready: list[tuple[Message, str]], out: _Outcome, refuse) -> None:
    """New events only: a message whose messageId is already an event of usage_events is
    a duplicate and changes nothing. (A write key is public: appending would otherwise
    let it rewrite any event whose id it knows, another source's too, onto another
    account.)"""
    stored = _stored_events(store, [m.message_id for m, _ in ready])
    out.done += [m.message_id for m, _ in ready if m.message_id in stored]
    ready = [(m, a) for m, a in ready if m.message_id not in stored]
    rows = [
        {
            "event_id": m.message_id,
            "account_id": account,
            "user_id": m.user_id,
            "event": m.event,
            "ts": m.ts.isoformat(),
            "quantity": m.quantity,
        }
        for m, account in ready
    ]
    _write(store, "usage_events", [m for m, _ in ready], rows, out, refuse)


def _stored_events(store, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` usage_events holds."""
    if not event_ids:
        return set()
    t = store.table("usage_events")
    found = store.execute(t.filter(t.event_id.isin(event_ids)).select("event_id"))
    return set(found["event_id"].to_pylist())


def _identify(store, ready: list[tuple[Message, str]], out: _Outcome, refuse) -> None:
    """A user's created_at from its traits; without one, nothing to change."""
    account = dict((m.user_id, a) for m, a in ready)
    out.done += [m.message_id for m, _ in ready if m.created_at is None]
    dated = _last_per_user([m for m, _ in ready if m.created_at is not None], out)
    rows = [
        {"user_id": m.user_id, "account_id": account[m.user_id], "created_at": m.created_at}
        for m in dated
    ]
    _write(store, "users", dated, rows, out, refuse)
