"""The worker drops its local table stores after an unclean stop, keeps them after a clean one."""

from __future__ import annotations

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

