"""What every entity logic (an order, a chat session) shares: the first step of an
event (``admit``), its indicator items (``update_items``, see ``streams/effects.py``)
and its positional table documents (``EntityDocuments``)."""

from __future__ import annotations

from .effects import Effects, diff_items


def admit(s, ev: dict) -> bool | None:
    """The common first step of an entity's logic: drop a duplicate ``event_id``,
    take platform and shop from the first event, keep the earliest ``ts``.
    None for a duplicate; else whether ``first_us`` moved (a fact the items read)."""
    eid = ev["event_id"]
    seen = s.seen
    if eid in seen:
        return None
    seen.add(eid)
    if s.platform is None:
        s.platform, s.shop_id = ev["platform"], ev["shop_id"]
    ts = ev["ts_us"]
    first = s.first_us
    if first is None or ts < first:
        s.first_us = ts
        return True
    return False


def update_items(s, new: dict, at_us: int, fx: Effects) -> None:
    """Replace an entity's indicator items, sending the difference to its shop."""
    if new != s.items:
        diff_items(s.items, new, s.platform, s.shop_id, at_us, fx.contribs)
        s.items = new
        s.ver += 1


def document_fields(d: list, what: str, fmt: int, n: int) -> list:
    """The fields of a positional state document of format ``fmt``, padded to ``n``
    with None (a document does not store its trailing empty fields)."""
    if d[0] != fmt:
        raise ValueError(f"{what} document of an unknown format: {d[0]!r}")
    return d if len(d) >= n else [*d, *(None,) * (n - len(d))]


class EntityDocuments:
    """What an entity state (an order, a chat session) shares about its table documents:
    a subclass names its ``_key`` slot, ``_what``, ``_format`` and ``_fields`` (see
    ``document_fields``) and restores a padded list in ``_restore_fields``."""

    __slots__ = ()

    def _init_entity(self) -> None:
        """The fields ``admit`` fills from the first event: platform, shop, the event ids
        applied (duplicates), the earliest ``ts``."""
        self.platform = None
        self.shop_id = None
        self.seen: set[str] = set()
        self.first_us = None

    @staticmethod
    def _trimmed(d: list) -> list:
        """A document without its trailing empty fields."""
        while d[-1] is None:
            d.pop()
        return d

    @classmethod
    def restore(cls, d):
        """From a document of ``snapshot`` (format 1) or from the dict of the first documents."""
        if type(d) is dict:
            return cls._restore_dict(d)
        return cls._restore_fields(document_fields(d, cls._what, cls._format, cls._fields))

    def _dict_head(self) -> dict:
        """The slots as a dict, ``seen`` and ``items`` as lists (see ``snapshot_dict``)."""
        d = {k: getattr(self, k) for k in self.__slots__}
        d["seen"] = sorted(self.seen)
        d["items"] = {k: list(v) for k, v in self.items.items()}
        return d

    @classmethod
    def _restore_dict(cls, d: dict):
        s = cls(d[cls._key])
        for k in cls.__slots__:
            setattr(s, k, d[k])
        s.seen = set(d["seen"])
        s.items = {k: tuple(v) for k, v in d["items"].items()}
        return s
