"""When a source of the event-time merge counts as idle (the ``event`` clock domain).

The order agent merges orders, shipments and refunds of one partition by event
time (streams.partition): a record waits until every other source has shown a
later one, or is idle, i.e. has nothing more to bring that was produced before
the records waiting. Kafka gives no order across partitions, so "nothing more"
is judged from the broker's end offsets, asked for every half second:

- the worker has read the source up to the end offset the broker gave;
- that answer came ``QUIET_S`` or more after the newest record the partition
  holds was produced (its Kafka timestamp), and
- the order sources were quiet: no end offset of any of their partitions moved
  in the ``QUIET_S`` before the answer. A producer with a backlog (linger, a
  bulk send, a loaded machine) appends records seconds after it stamped them,
  and not in the order it stamped them across partitions; while anything is
  still being appended, a record stamped before the waiting ones may be on its
  way. Quiet ends mean the backlog has landed, whatever the timing of fetches
  and producer.
- Or, for a sparse source beside a steady stream (the inputs are never quiet),
  the source's own end has not moved for ``MAX_IDLE_S`` (Kafka Streams'
  ``max.task.idle.ms``): a record of it appended later than that is applied
  late (counted by shopwatch_late_records_total), never lost.

Pure: the shell feeds the broker's answers and the positions it has read.
"""

from __future__ import annotations

QUIET_S = 2.0
MAX_IDLE_S = 30.0


class SourceEnds:
    def __init__(self, quiet_s: float = QUIET_S, max_idle_s: float = MAX_IDLE_S) -> None:
        self.quiet_s = quiet_s
        self.max_idle_s = max_idle_s
        self.ends: dict = {}  # TP -> end offset of its last answer (every partition of the order sources)
        self.moved_at: dict = {}  # TP -> when an answer first showed its current end
        self.inputs_moved_at: float | None = None  # when an answer last showed any end move
        self.verified: dict = {}  # TP -> (end, asked, first offset) of this worker's partitions

    def clear(self) -> None:
        self.__init__(self.quiet_s, self.max_idle_s)

    def observe(self, ends: dict, asked: float, starts: dict | None = None, mine=()) -> None:
        """The broker's end offsets of the order sources (every partition), asked at
        ``asked`` (epoch s); ``starts`` the first offsets of ``mine``, this worker's."""
        for tp, end in ends.items():
            if end is None:
                continue
            if self.ends.get(tp) != end:
                self.ends[tp] = end
                self.moved_at[tp] = asked
                self.inputs_moved_at = asked
        if self.inputs_moved_at is None:
            self.inputs_moved_at = asked  # the first answer: nothing known before it
        for tp in mine:
            if tp in self.ends:
                self.verified[tp] = (self.ends[tp], asked, (starts or {}).get(tp) or 0)

    def idle(self, tps, since: float, position) -> list:
        """Of ``tps`` (one partition's sources), those idle for records produced up to
        ``since``; ``position(tp, first)`` is the next offset the worker will read."""
        out = []
        for tp in tps:
            v = self.verified.get(tp)
            if v is None:
                continue
            end, asked, first = v
            if asked < since + self.quiet_s:
                continue
            quiet = asked - self.inputs_moved_at >= self.quiet_s
            if not quiet and asked - self.moved_at.get(tp, asked) < self.max_idle_s:
                continue
            if position(tp, first) >= end:
                out.append(tp)
        return out
