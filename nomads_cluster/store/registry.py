"""The model registry, in the store's database: the versions filed, the one the fleet
serves, candidates shadowed on live traffic, and churn measured before a promotion.

Every instance reads the served version from here (``web/served_model.py``), so a
promotion made from any machine that reaches the database (a laptop, a one-off dyno)
reaches every worker of every instance. A version is filed as numbers (its card and
its segments' profiles), never as a pickle: serving unpickles nothing. Filed versions
are never altered; their checksum is verified each time one is loaded.
"""

import getpass
import hashlib
import json
import os
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import ValidationError

from ..segmentation.card import ModelCard
from ..segmentation.model import ModelError, SegmentModel, load_model, model_from_profiles
from ..validation import error_details, summarize
from .engine import as_utc
from .tables import (
    model_churn,
    model_promotions,
    model_shadows,
    model_versions,
    shadow_agreement,
)
from .users import UserStore

# PostgreSQL's channel: a promotion, a rollback or a shadow change wakes every instance.
CHANNEL = "nomads_model"
# The first revision of the schema that holds the registry.
REGISTRY_REVISION = "0005"
# (served segment, candidate segment) -> requests
SegmentPairs = Mapping[tuple[int, int], int]


class RegistryError(ModelError):
    """The registry cannot do what was asked; the message says why, in one line."""


def operator() -> str:
    """Who files or promotes: the user and the host (a dyno's name on Heroku)."""
    host = os.environ.get("DYNO") or socket.gethostname()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's user without a name
        user = str(os.getuid())
    return f"{user}@{host}"


def parameters_sha256(card: dict[str, Any], profiles: list[list[float]]) -> str:
    """The checksum of what serving reads: the card and the profiles, canonically."""
    text = json.dumps({"card": card, "profiles": profiles}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Agreement:
    """A shadowed candidate's answers beside the served ones, summed over the fleet."""

    since: datetime
    pairs: SegmentPairs
    shadowing: bool  # still shadowed now

    @property
    def requests(self) -> int:
        return sum(self.pairs.values())

    @property
    def disagreed(self) -> int:
        return sum(n for (served, shadow), n in self.pairs.items() if served != shadow)

    @property
    def share(self) -> float:
        return self.disagreed / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Churn:
    """The stored users a version would move, as last measured."""

    measured_against: str
    users: int
    changed: int
    moves: list[dict[str, int]]
    measured_at: datetime

    @property
    def share(self) -> float:
        return self.changed / self.users if self.users else 0.0


@dataclass(frozen=True)
class FiledVersion:
    """One version of the registry, as ``models`` lists it."""

    version: str
    created_at: datetime
    filed_by: str
    algorithm: str
    segments: int
    served: bool
    churn: Churn | None
    shadow: Agreement | None


class ModelRegistry:
    """The registry's reads and writes, on the store's database."""

    def __init__(self, store: UserStore):
        if store.schema_revision is not None and store.schema_revision < REGISTRY_REVISION:
            raise RegistryError(
                f"the database schema is at revision {store.schema_revision}, which has no "
                "model registry: run `nomads-cluster db upgrade` (Heroku's release phase does)"
            )
        self.store = store
        self.postgresql = store.engine.dialect.name == "postgresql"

    # Filing and loading

    def file(self, model: SegmentModel, filed_by: str) -> bool:
        """File ``model`` as a version (served by nobody yet); False when that version
        was filed already (its first card is kept)."""
        card = json.loads(model.card.model_dump_json(exclude_unset=True))
        profiles = model.profiles.tolist()
        checksum = parameters_sha256(card, profiles)
        row = {
            "version": model.version,
            "card": card,
            "profiles": profiles,
            "parameters_sha256": checksum,
            "heatmap": model.heatmap_png,
            "filed_by": filed_by,
            "filed_at": datetime.now(UTC),
        }
        insert = (
            self.store.insert(model_versions)
            .on_conflict_do_nothing(index_elements=[model_versions.c.version])
            .returning(model_versions.c.version)
        )
        query = sa.select(model_versions.c.profiles).where(
            model_versions.c.version == model.version
        )

        def work(conn: sa.Connection) -> bool:
            if conn.execute(insert, row).first() is not None:
                return True
            # The same model file gives the same version: its card may differ (a file
            # imported without its data), its profiles may not.
            if conn.execute(query).scalar_one() != profiles:
                raise RegistryError(f"version {model.version} is filed already with other profiles")
            return False

        return self.store.run(work, write=True)

    def load(self, version: str) -> SegmentModel:
        """The filed version, checked against its checksum, ready to score."""
        query = sa.select(model_versions).where(model_versions.c.version == version)
        row = self.store.run(lambda conn: conn.execute(query).first(), write=False)
        if row is None:
            raise RegistryError(f"no version {version} in the registry: {self._filed_list()}")
        origin = f"registry version {version}"
        if parameters_sha256(row.card, row.profiles) != row.parameters_sha256:
            raise RegistryError(f"{origin}: its parameters do not match their checksum")
        try:
            card = ModelCard.model_validate(row.card)
        except ValidationError as exc:
            raise RegistryError(
                f"{origin}: not a model card: {summarize(error_details(exc))}"
            ) from None
        return model_from_profiles(card, np.array(row.profiles), row.heatmap, origin)

    def _filed_list(self) -> str:
        query = sa.select(model_versions.c.version).order_by(model_versions.c.filed_at)
        filed = self.store.run(lambda conn: conn.execute(query).scalars().all(), write=False)
        return f"versions filed: {', '.join(filed)}" if filed else "it holds no version yet"

    # Serving

    def served(self) -> str | None:
        """The version the fleet serves; None before any is."""
        query = (
            sa.select(model_promotions.c.version).order_by(model_promotions.c.id.desc()).limit(1)
        )
        return self.store.run(lambda conn: conn.execute(query).scalar(), write=False)

    def following(self) -> tuple[str | None, str | None]:
        """What every instance follows, in one read: the served version and the
        shadowed one (or None)."""
        served = (
            sa.select(model_promotions.c.version)
            .order_by(model_promotions.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        shadowed = (
            sa.select(model_shadows.c.version)
            .where(model_shadows.c.stopped_at.is_(None))
            .limit(1)
            .scalar_subquery()
        )
        query = sa.select(served, shadowed)
        row = self.store.run(lambda conn: conn.execute(query).one(), write=False)
        return row[0], row[1]

    def serve_first(self, model_dir: str | Path) -> str | None:
        """On a registry that serves nothing yet, file the model of ``model_dir`` and
        serve it (a fresh deploy); the version, or None when one was served already."""
        if self.served() is not None:
            return None
        model = load_model(model_dir)

        def work(conn: sa.Connection) -> str | None:
            self._take_turns(conn)
            if conn.execute(sa.select(sa.func.count()).select_from(model_promotions)).scalar():
                return None  # another process served one meanwhile
            self._promotion(conn, model.version, None, "first")
            return model.version

        self.file(model, operator())
        return self.store.run(work, write=True)

    def promote(self, version: str, promoted_by: str) -> str | None:
        """Serve ``version`` across the fleet (loaded, so checked, first), ending its
        shadow if it had one; the version it replaces."""
        self.load(version)

        def work(conn: sa.Connection) -> str | None:
            self._take_turns(conn)
            current = self._current(conn)
            if current is not None and current[0] == version:
                raise RegistryError(f"version {version} is served already")
            previous = None if current is None else current[0]
            # Served now, it has nothing left to be compared with: its shadow ends.
            conn.execute(
                model_shadows.update()
                .where(model_shadows.c.version == version)
                .where(model_shadows.c.stopped_at.is_(None))
                .values(stopped_at=datetime.now(UTC))
            )
            self._promotion(conn, version, previous, "promote", promoted_by)
            return previous

        return self.store.run(work, write=True)

    def rollback(self, promoted_by: str) -> tuple[str, str]:
        """Serve again the version served before the current one; (that version, the
        one it replaces). Each rollback steps one promotion further back."""

        def work(conn: sa.Connection) -> tuple[str, str]:
            self._take_turns(conn)
            current = self._current(conn)
            if current is None or current[1] is None:
                raise RegistryError("nothing to roll back to: no version was served before")
            (version, back_to, current_id) = current
            self.load(back_to)  # still loadable (its checksum verified)
            # The version before ``back_to``, for the rollback after this one.
            earlier = conn.execute(
                sa.select(model_promotions.c.previous)
                .where(model_promotions.c.version == back_to)
                .where(model_promotions.c.id < current_id)
                .order_by(model_promotions.c.id.desc())
                .limit(1)
            ).scalar()
            self._promotion(conn, back_to, earlier, "rollback", promoted_by)
            return back_to, version

        return self.store.run(work, write=True)

    def _take_turns(self, conn: sa.Connection) -> None:
        """Promotions of several machines at once take turns (SQLite's writers do)."""
        if self.postgresql:
            conn.execute(sa.text("LOCK TABLE model_promotions IN EXCLUSIVE MODE"))

    @staticmethod
    def _current(conn: sa.Connection) -> tuple[str, str | None, int] | None:
        row = conn.execute(
            sa.select(
                model_promotions.c.version, model_promotions.c.previous, model_promotions.c.id
            )
            .order_by(model_promotions.c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else (row.version, row.previous, row.id)

    def _promotion(
        self,
        conn: sa.Connection,
        version: str,
        previous: str | None,
        action: str,
        promoted_by: str | None = None,
    ) -> None:
        conn.execute(
            model_promotions.insert().values(
                version=version,
                previous=previous,
                action=action,
                promoted_by=promoted_by or operator(),
                promoted_at=datetime.now(UTC),
            )
        )
        self._announce(conn)

    def _announce(self, conn: sa.Connection) -> None:
        """Wake every instance once this transaction commits (PostgreSQL; elsewhere
        they find it at their next poll)."""
        if self.postgresql:
            conn.execute(sa.text(f"NOTIFY {CHANNEL}"))

    # Shadowing

    def start_shadow(self, version: str) -> None:
        """Score ``version`` beside the served model on every instance, its agreement
        counted afresh from now."""
        self.load(version)
        now = datetime.now(UTC)

        def work(conn: sa.Connection) -> None:
            active = model_shadows.c.stopped_at.is_(None)
            conn.execute(model_shadows.update().where(active).values(stopped_at=now))
            conn.execute(model_shadows.delete().where(model_shadows.c.version == version))
            conn.execute(model_shadows.insert().values(version=version, started_at=now))
            conn.execute(
                shadow_agreement.delete().where(shadow_agreement.c.shadow_version == version)
            )
            self._announce(conn)

        self.store.run(work, write=True)

    def stop_shadow(self) -> str | None:
        """Stop shadowing; the version that was shadowed (its figures are kept)."""

        def work(conn: sa.Connection) -> str | None:
            active = model_shadows.c.stopped_at.is_(None)
            version = conn.execute(sa.select(model_shadows.c.version).where(active)).scalar()
            conn.execute(model_shadows.update().where(active).values(stopped_at=datetime.now(UTC)))
            self._announce(conn)
            return version

        return self.store.run(work, write=True)

    def add_agreement(self, counts: Mapping[tuple[str, str, int, int], int]) -> None:
        """Add requests to the fleet's counts: (candidate, served version, served
        segment, candidate segment) -> requests."""
        if not counts:
            return
        rows = [
            {
                "shadow_version": shadow,
                "served_version": served,
                "served_segment": served_segment,
                "shadow_segment": shadow_segment,
                "requests": requests,
            }
            for (shadow, served, served_segment, shadow_segment), requests in sorted(counts.items())
        ]
        insert = self.store.insert(shadow_agreement)
        upsert = insert.on_conflict_do_update(
            index_elements=[c for c in shadow_agreement.primary_key.columns],
            set_={"requests": shadow_agreement.c.requests + insert.excluded.requests},
        )
        self.store.run(lambda conn: conn.execute(upsert, rows), write=True)

    def agreement(self, version: str) -> Agreement | None:
        """The candidate's live agreement since it was last shadowed, or None."""
        shadow = sa.select(model_shadows).where(model_shadows.c.version == version)
        pairs = (
            sa.select(
                shadow_agreement.c.served_segment,
                shadow_agreement.c.shadow_segment,
                sa.func.sum(shadow_agreement.c.requests),
            )
            .where(shadow_agreement.c.shadow_version == version)
            .group_by(shadow_agreement.c.served_segment, shadow_agreement.c.shadow_segment)
        )

        def work(conn: sa.Connection) -> Agreement | None:
            row = conn.execute(shadow).first()
            if row is None:
                return None
            counts = Counter({(a, b): int(n) for a, b, n in conn.execute(pairs)})
            return Agreement(as_utc(row.started_at), counts, row.stopped_at is None)

        return self.store.run(work, write=False)

    # Churn

    def record_churn(
        self, version: str, measured_against: str, moves: Mapping[tuple[int, int], int]
    ) -> None:
        """Keep the churn just measured of ``version`` (replacing an earlier one)."""
        row = {
            "version": version,
            "measured_against": measured_against,
            "users": sum(moves.values()),
            "changed": sum(n for (old, new), n in moves.items() if old != new),
            "moves": [{"from": o, "to": n, "users": u} for (o, n), u in sorted(moves.items())],
            "measured_at": datetime.now(UTC),
        }

        def work(conn: sa.Connection) -> None:
            conn.execute(model_churn.delete().where(model_churn.c.version == version))
            conn.execute(model_churn.insert().values(row))

        self.store.run(work, write=True)

    def churn(self, version: str) -> Churn | None:
        query = sa.select(model_churn).where(model_churn.c.version == version)
        row = self.store.run(lambda conn: conn.execute(query).first(), write=False)
        return None if row is None else _churn(row)

    # Listing

    def versions(self) -> list[FiledVersion]:
        """Every filed version, oldest first."""
        query = sa.select(
            model_versions.c.version,
            model_versions.c.filed_at,
            model_versions.c.filed_by,
            model_versions.c.card,
        ).order_by(model_versions.c.filed_at, model_versions.c.version)
        churns = sa.select(model_churn)

        def work(conn: sa.Connection) -> tuple[list[sa.Row], dict[str, Churn]]:
            rows = conn.execute(query).all()
            return rows, {row.version: _churn(row) for row in conn.execute(churns)}

        rows, churn = self.store.run(work, write=False)
        served = self.served()
        return [
            FiledVersion(
                version=row.version,
                created_at=as_utc(row.filed_at),
                filed_by=row.filed_by,
                algorithm=row.card["algorithm"],
                segments=row.card["n_components"],
                served=row.version == served,
                churn=churn.get(row.version),
                shadow=self.agreement(row.version),
            )
            for row in rows
        ]


def _churn(row: sa.Row) -> Churn:
    return Churn(
        measured_against=row.measured_against,
        users=row.users,
        changed=row.changed,
        moves=row.moves,
        measured_at=as_utc(row.measured_at),
    )
