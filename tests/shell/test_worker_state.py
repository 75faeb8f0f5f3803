"""The worker's local state: dropped after an unclean stop, kept after a clean one; one
directory per app id and topic prefix (tables and clean-shutdown mark); a table partition
ahead of its changelog dropped at recovery instead of Faust's ConsistencyError."""

from __future__ import annotations

from pathlib import Path

from shopwatch.agents.worker import CLEAN_MARK, drop_local_state_after_crash


def _tables(tmp_path):
    t = tmp_path / "v1" / "tables" / "orders-0.db"
    t.mkdir(parents=True)
    (t / "CURRENT").write_text("x")
    return tmp_path / "v1" / "tables"


def test_unclean_stop_drops_the_local_tables(tmp_path):
    tabledir = _tables(tmp_path)
    assert drop_local_state_after_crash(tmp_path, tabledir)
    assert not tabledir.exists()


def test_clean_stop_keeps_them_and_the_mark_is_taken_while_running(tmp_path):
    tabledir = _tables(tmp_path)
    (tmp_path / CLEAN_MARK).touch()
    assert not drop_local_state_after_crash(tmp_path, tabledir)
    assert (tabledir / "orders-0.db" / "CURRENT").exists()
    assert not (tmp_path / CLEAN_MARK).exists()  # a crash from now on is unclean
    assert drop_local_state_after_crash(tmp_path, tabledir)


def test_first_start_has_nothing_to_drop(tmp_path):
    assert not drop_local_state_after_crash(tmp_path / "new", tmp_path / "new" / "v1" / "tables")



# --- One state directory per app id and topic prefix -------------------------------------------------------

def _settings(tmp_path, app_id="shopwatch", prefix=""):
    from shopwatch.agents.settings import Settings

    return Settings(data_dir=str(tmp_path / "data"), app_id=app_id, topic_prefix=prefix)


def test_state_dir_is_per_app_id_and_topic_prefix(tmp_path):
    from shopwatch.agents.app import NO_PREFIX_DIR, state_dir

    data = tmp_path / "data"
    assert state_dir(_settings(tmp_path)) == data / "shopwatch" / NO_PREFIX_DIR
    assert state_dir(_settings(tmp_path, "shopwatch-b", "staging.")) == data / "shopwatch-b" / "staging."
    assert state_dir(_settings(tmp_path), app_id="other") == data / "other" / NO_PREFIX_DIR
    dirs = {state_dir(_settings(tmp_path, a, p)) for a in ("a", "b", "_no-prefix") for p in ("", "x.", "y.", "v1")}
    assert len(dirs) == 12  # every (app id, prefix) its own directory


def test_state_dir_names_are_single_safe_components_without_collisions(tmp_path):
    from shopwatch.agents.app import state_dir

    data = tmp_path / "data"
    odd = ["../escape", "a/b", "a_b", "a b", "{conf.name}", ".", "..", "_no-prefix", "x" * 300, "订单"]
    got = {}
    for name in odd:
        d = state_dir(_settings(tmp_path, name, name))
        rel = d.relative_to(data)
        assert len(rel.parts) == 2, rel
        for part in rel.parts:
            assert part not in (".", "..") and "/" not in part and "{" not in part and len(part) <= 100
        got[name] = d
    assert len(set(got.values())) == len(odd)
    assert got["a_b"].parts[-2] == "a_b"  # a plain name stays readable
    assert got["a/b"].parts[-2].startswith("_a_b-")  # an escaped one is recognisable and distinct


def test_the_app_keeps_its_tables_and_mark_in_its_state_dir(tmp_path):
    from shopwatch.agents.app import build_app, state_dir

    a, b = _settings(tmp_path, "app-a", "pa."), _settings(tmp_path, "app-b", "pb.")
    app_a, app_b = build_app(a), build_app(b)
    assert Path(str(app_a.conf.datadir)) == state_dir(a)
    assert Path(str(app_a.conf.tabledir)).is_relative_to(state_dir(a))
    assert Path(str(app_b.conf.tabledir)).is_relative_to(state_dir(b))
    assert not Path(str(app_a.conf.tabledir)).is_relative_to(state_dir(b))
    assert Path(str(build_app(a, app_id="app-c").conf.datadir)) == state_dir(a, "app-c")


def test_a_clean_stop_of_one_app_does_not_vouch_for_another(tmp_path):
    """Two apps on one data dir: A stopped cleanly (its mark), B was killed."""
    from shopwatch.agents.app import state_dir

    dirs = {}
    for app_id in ("app-a", "app-b"):
        sd = state_dir(_settings(tmp_path, app_id))
        t = sd / "v1" / "tables" / "orders-0.db"
        t.mkdir(parents=True)
        (t / "CURRENT").write_text("x")
        dirs[app_id] = sd
    (dirs["app-a"] / CLEAN_MARK).touch()
    assert not drop_local_state_after_crash(dirs["app-a"], dirs["app-a"] / "v1" / "tables")
    assert drop_local_state_after_crash(dirs["app-b"], dirs["app-b"] / "v1" / "tables")
    assert (dirs["app-a"] / "v1" / "tables" / "orders-0.db" / "CURRENT").exists()
    assert not (dirs["app-b"] / "v1" / "tables").exists()
    assert not (tmp_path / "data" / CLEAN_MARK).exists()  # no mark shared by every app


def test_tables_of_the_old_layout_are_reported(tmp_path):
    from shopwatch.agents.worker import note_old_layout

    data = tmp_path / "data"
    assert not note_old_layout(data)
    (data / "v1" / "tables" / "orders-0.db").mkdir(parents=True)
    assert note_old_layout(data)


# --- Local state ahead of the changelog: dropped, not a ConsistencyError ----------------------------------

class _Consumer:
    """What Recovery._build_offsets asks the consumer: end and earliest offsets."""

    def __init__(self, ends):
        self.ends = ends

    async def highwaters(self, *tps):
        return {tp: self.ends[tp] for tp in tps}

    async def earliest_offsets(self, *tps):
        return {tp: 0 for tp in tps}


def test_recovery_drops_a_partition_ahead_of_its_changelog(tmp_path):
    import asyncio
    from collections import Counter

    from faust.types import TP

    from shopwatch.agents.app import build_app
    from shopwatch.agents.faust_fixes import ShopwatchRecovery, ShopwatchTableManager

    async def main():
        app = build_app(_settings(tmp_path, "app-a"))
        table = app.Table("orders", partitions=2)
        store = table.data
        topic = table.changelog_topic.get_topic_name()
        ahead, behind = TP(topic, 0), TP(topic, 1)
        for tp, offset in ((ahead, 79), (behind, 3)):
            store._db_for_partition(tp.partition).put(b"k%d" % tp.partition, b"v")
            store.set_persisted_offset(tp, offset)
        assert isinstance(app.tables, ShopwatchTableManager)
        rec = app.tables.recovery
        assert isinstance(rec, ShopwatchRecovery)
        rec.tp_to_table.update({ahead: table, behind: table})
        offsets = Counter({ahead: table.persisted_offset(ahead), behind: table.persisted_offset(behind)})
        # ahead: the changelog was recreated and is empty (79 > -1); behind: 3 <= 9
        await rec._build_offsets(_Consumer({ahead: 0, behind: 10}), {ahead, behind}, offsets, "active")
        assert offsets[ahead] == -1  # read from the start of the changelog
        assert offsets[behind] == 3  # kept: resumes after its persisted offset
        assert store.persisted_offset(ahead) is None
        assert store._db_for_partition(0).get(b"k0") is None  # the stale state is gone
        assert store._db_for_partition(1).get(b"k1") == b"v"
        # an offset equal to the end offset is ahead too (Faust's own check skips 0s)
        store.set_persisted_offset(behind, 0)
        offsets = Counter({behind: 0})
        await rec._build_offsets(_Consumer({behind: 0}), {behind}, offsets, "standby")
        assert offsets[behind] == -1 and store.persisted_offset(behind) is None

    asyncio.run(main())


def test_the_changelogs_are_created_with_the_apps_topics(tmp_path):
    """A recreated (or new) changelog is created, and in the metadata, before the consumer
    subscribes: not by Faust a moment before (its tables would see 0 partitions)."""
    from shopwatch.agents.app import build_app

    s = _settings(tmp_path, "app-a", "pa.")
    app = build_app(s)
    app.Table("orders", partitions=s.partitions)
    app.Table("odd", partitions=s.partitions + 1)  # left to Faust
    assert app.sw_changelogs() == {"app-a-orders-changelog": {"cleanup.policy": "compact"}}
