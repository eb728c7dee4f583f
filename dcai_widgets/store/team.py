"""The team side of a label store: the annotator registry and item claims with leases.

Registry: one row per annotator (name, role, sha256 hex of their secret token, revoked flag); the token
itself is never stored. Claims: an item shown to an annotator is claimed for ``lease_s`` seconds; the
page renews the lease while it is alive, a label consumes it, and an expired claim simply stops
counting, so a crashed page's items return to the queue. Every claim decision is taken inside one write
transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL under a transaction-level advisory lock), so two
annotators drawing at the same instant never receive the same item unless overlap asks for it.
This is the locking Label Studio got wrong once (LS #795: one task served to two users).

Team-wide state: a named lease (one holder at a time, lapsing on its own) and published values, both
kept in the ``meta`` table under ``lease:NAME`` / ``team:NAME`` keys, so that one page refits the
shared queue's engine for the whole team and the others read its ranking (dcai_widgets.team.SharedQueue)
instead of each repeating the same fit on the same labels.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

ROLES = ("annotator", "lead")


def _marks(n: int) -> str:
    return ",".join("?" * n)


class TeamMixin:
    """Registry and claims; relies on the store's ``_write``/``_read`` and ``where``."""

    where: str
    _write: Callable[..., Any]
    _read: Callable[..., list]

    # -- annotator registry ----------------------------------------------------------------------
    def add_annotator(self, name: str, role: str = "annotator", token_hash: str | None = None) -> None:
        """Register ``name`` (or update it): sets the role, un-revokes, and sets ``token_hash`` when one
        is given (``None`` keeps the stored hash, so links stay stable across restarts)."""
        name = str(name).strip()
        if not name:
            raise ValueError("an annotator needs a non-empty name")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        now = time.time()

        def upsert(c) -> None:
            c.execute("INSERT INTO annotators (name, role, token_hash, revoked, created) VALUES (?, ?, ?, 0, ?) "
                      "ON CONFLICT (name) DO UPDATE SET role = excluded.role, revoked = 0, "
                      "token_hash = COALESCE(excluded.token_hash, annotators.token_hash)",
                      (name, role, token_hash, now))

        self._write(upsert)

    def revoke_annotator(self, name: str) -> bool:
        """Revoke ``name``'s token (their labels stay); their claims are released. False if unknown."""

        def revoke(c) -> bool:
            found = c.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone() is not None
            c.execute("UPDATE annotators SET revoked = 1 WHERE name = ?", (name,))
            c.execute("DELETE FROM claims WHERE annotator = ?", (name,))
            return found

        return bool(self._write(revoke))

    def annotators(self) -> pd.DataFrame:
        """Every registered annotator: name, role, token_hash, revoked (bool), created (unix time)."""
        rows = self._read("SELECT name, role, token_hash, revoked, created FROM annotators ORDER BY created, name")
        df = pd.DataFrame(rows, columns=["name", "role", "token_hash", "revoked", "created"])
        return df.astype({"revoked": bool})

    def annotator_for_token_hash(self, token_hash: str) -> tuple[str, str] | None:
        """(name, role) of the live annotator with this token hash; None if unknown or revoked."""
        if not token_hash:
            return None
        rows = self._read("SELECT name, role FROM annotators WHERE token_hash = ? AND revoked = 0", (str(token_hash),))
        return (rows[0][0], rows[0][1]) if rows else None

    # -- claims ----------------------------------------------------------------------------------
    def claim(self, annotator: str, candidates: Iterable[int], n: int = 1, lease_s: float = 300.0,
              per_item: int | Callable[[int], int] = 1) -> list[int]:
        """Atomically claim up to ``n`` items of ``candidates`` (in their order) for ``annotator``.

        Items this annotator already holds come first (their lease is renewed). An item is skipped if
        this annotator has a live human/review label on it, or if the distinct annotators with a live
        human/review label on it plus other annotators' live claims reach ``per_item`` (an int, or a
        function item -> int for overlap: 2 shows the item to two people)."""
        if not annotator:
            raise ValueError("claim needs an annotator name")
        cands = list(dict.fromkeys(int(i) for i in candidates))
        n, lease_s = int(n), float(lease_s)
        if n <= 0 or not cands:
            return []
        limit = per_item if callable(per_item) else (lambda _i, k=int(per_item): k)

        def take(c) -> list[int]:
            now = time.time()
            # the held claims and the first chunk's labels/claims/exclusions are asked for together (with
            # PostgreSQL one round trip; rows of items held already are just not used)
            rows = c.execute("SELECT item FROM claims WHERE annotator = ? AND expires > ?", (annotator, now))
            first = self._ask_free(c, cands[:500], now)
            held = {r[0] for r in rows.fetchall()}
            got = [i for i in cands if i in held][:n]
            for a in range(0, len(cands), 500):
                if len(got) >= n:
                    break
                part = [i for i in cands[a:a + 500] if i not in held]
                if part:
                    asked = first if a == 0 else self._ask_free(c, part, now)
                    got += self._pick_free(asked, annotator, part, limit, n - len(got))
            c.executemany("INSERT INTO claims (item, annotator, expires) VALUES (?, ?, ?) ON CONFLICT (item, annotator) "
                          "DO UPDATE SET expires = excluded.expires", [(i, annotator, now + lease_s) for i in got])
            return got

        return list(self._write(take))

    @staticmethod
    def _ask_free(c, part: list[int], now: float) -> tuple:
        """Send the three reads `_pick_free` needs for the items ``part`` (their results are read there)."""
        q = _marks(len(part))
        return (c.execute(f"SELECT DISTINCT e.item, e.annotator FROM events e WHERE e.source IN ('human', 'review') "
                          f"AND e.label IS NOT NULL AND e.item IN ({q}) AND NOT EXISTS "
                          f"(SELECT 1 FROM events r WHERE r.retracts = e.seq)", part),
                c.execute(f"SELECT item, annotator FROM claims WHERE expires > ? AND item IN ({q})", [now, *part]),
                c.execute(f"SELECT item, excluded FROM exclusions WHERE item IN ({q}) ORDER BY seq", part))

    @staticmethod
    def _pick_free(asked: tuple, annotator: str, part: list[int], limit: Callable[[int], int],
                   want: int) -> list[int]:
        """The first ``want`` items of ``part`` that ``annotator`` may claim now (see ``claim``), from
        the reads `_ask_free` sent."""
        labeled_rows, claim_rows, excl_rows = (cur.fetchall() for cur in asked)
        labeled: dict[int, set] = {}
        for item, who in labeled_rows:
            labeled.setdefault(item, set()).add(who)
        claimed: dict[int, set] = {}
        excluded: dict[int, bool] = {}
        for item, who in claim_rows:
            if who != annotator:
                claimed.setdefault(item, set()).add(who)
        for item, flag in excl_rows:
            excluded[item] = bool(flag)          # the latest exclusion event per item wins
        out = []
        for i in part:
            if excluded.get(i):                  # kept out of training (Session.exclude): never claimed
                continue
            people = labeled.get(i, set())
            if annotator in people:
                continue
            if len(people) + len(claimed.get(i, set()) - people) >= int(limit(i)):
                continue
            out.append(i)
            if len(out) >= want:
                break
        return out

    def renew_claims(self, annotator: str, ids: Iterable[int] | None = None, lease_s: float = 300.0) -> list[int]:
        """Extend ``annotator``'s live claims (all, or those on ``ids``); returns the items still held.
        A claim that already ran out is not revived: the item may have gone to someone else."""
        wanted = None if ids is None else {int(i) for i in ids}

        def renew(c) -> list[int]:
            now = time.time()
            rows = c.execute("SELECT item FROM claims WHERE annotator = ? AND expires > ? ORDER BY item",
                             (annotator, now)).fetchall()
            items = [r[0] for r in rows if wanted is None or r[0] in wanted]
            c.executemany("UPDATE claims SET expires = ? WHERE annotator = ? AND item = ?",
                          [(now + float(lease_s), annotator, i) for i in items])
            c.execute("DELETE FROM claims WHERE expires <= ?", (now - 3600.0,))   # tidy long-dead leases
            return items

        return list(self._write(renew))

    def release_claims(self, annotator: str, ids: Iterable[int] | None = None) -> int:
        """Give back ``annotator``'s claims (all, or those on ``ids``); returns how many were released."""
        sel = None if ids is None else sorted({int(i) for i in ids})

        def release(c) -> int:
            if sel is None:
                return c.execute("DELETE FROM claims WHERE annotator = ?", (annotator,)).rowcount
            gone = 0
            for a in range(0, len(sel), 900):
                part = sel[a:a + 900]
                gone += c.execute(f"DELETE FROM claims WHERE annotator = ? AND item IN ({_marks(len(part))})",
                                  [annotator, *part]).rowcount
            return gone

        return int(self._write(release))

    def claims(self) -> pd.DataFrame:
        """Live claims: id, annotator, expires (unix time)."""
        rows = self._read("SELECT item, annotator, expires FROM claims WHERE expires > ? ORDER BY item, annotator",
                          (time.time(),))
        return pd.DataFrame(rows, columns=["id", "annotator", "expires"]).astype({"id": "int64"})

    def exclusions_mark(self) -> int:
        """The latest exclusion event's number: a page compares it to see whether anything changed."""
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM exclusions")[0][0] or 0)

    @staticmethod
    def _drop_claims(c, items: Sequence[int]) -> None:
        """Every annotator's claims on ``items`` end (called inside the transaction excluding them)."""
        uniq = sorted({int(i) for i in items})
        for a in range(0, len(uniq), 900):
            part = uniq[a:a + 900]
            c.execute(f"DELETE FROM claims WHERE item IN ({_marks(len(part))})", part)

    @staticmethod
    def _consume_claims(c, annotator: str, items: Sequence[int]) -> None:
        """A person's label on an item ends their claim on it (called inside the label's transaction)."""
        uniq = sorted(set(items))
        for a in range(0, len(uniq), 900):
            part = uniq[a:a + 900]
            c.execute(f"DELETE FROM claims WHERE annotator = ? AND item IN ({_marks(len(part))})", [annotator, *part])

    # -- team-wide leases and published values -----------------------------------------------------
    def try_lease(self, name: str, holder: str, lease_s: float) -> bool:
        """Take (or renew) the lease ``name`` for ``holder`` for ``lease_s`` seconds, unless another
        holder has it and it has not run out; decided in one write transaction, so of two pages asking
        at the same instant exactly one gets it. True when ``holder`` holds it now."""
        if not name or not holder:
            raise ValueError("a lease needs a name and a holder")
        key = f"lease:{name}"

        def take(c) -> bool:
            now = time.time()
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                cur = _loads(row[0])
                if cur.get("holder") != holder and float(cur.get("expires", 0.0)) > now:
                    return False
            value = json.dumps({"holder": str(holder), "expires": now + float(lease_s)})
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                      (key, value))
            return True

        return bool(self._write(take))

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease ``name`` back if ``holder`` holds it; True if it did."""
        key = f"lease:{name}"

        def give(c) -> bool:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is None or _loads(row[0]).get("holder") != holder:
                return False
            c.execute("DELETE FROM meta WHERE key = ?", (key,))
            return True

        return bool(self._write(give))

    def lease_holder(self, name: str) -> str | None:
        """Who holds the lease ``name`` now (None: nobody, or it ran out)."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (f"lease:{name}",))
        cur = _loads(rows[0][0]) if rows else {}
        return cur.get("holder") if float(cur.get("expires", 0.0)) > time.time() else None

    def publish(self, name: str, value: dict) -> None:
        """Store ``value`` (JSON-serialisable) as the team's current ``name`` for every process to read."""
        text = json.dumps(value)
        self._write(lambda c: c.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (f"team:{name}", text)))

    def published(self, name: str) -> dict | None:
        """The value last published as ``name`` (None if none)."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (f"team:{name}",))
        return _loads(rows[0][0]) or None if rows else None

    def people_labels_since(self, seq: int) -> tuple[int, int]:
        """(number of human/review events after event ``seq`` (labels and retractions), the latest
        event seq in the store): how far a fit made at ``seq`` is behind the people's labels."""
        rows = self._read("SELECT COUNT(*) FROM events WHERE seq > ? AND source IN ('human', 'review')", (int(seq),))
        top = self._read("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(rows[0][0] or 0), int(top[0][0] or 0)


def _loads(text: str) -> dict:
    try:
        v = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}
