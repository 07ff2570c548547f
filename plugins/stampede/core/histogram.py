"""A sparse, mergeable latency histogram with bounded relative error.

Values are recorded in microseconds into log-linear buckets: exact below
2,048 µs, then 1,024 buckets per octave (as HdrHistogram with three
significant digits), so a reported percentile is within 0.05 % of the truth. Buckets are a plain ``{bucket: count}`` dict, so a
histogram ships to the Locust master as msgpack and two histograms merge
exactly by adding counts: percentiles across workers are computed from the
merged distribution, never averaged.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping

_SUB_BITS = 10
_SUB_BUCKETS = 1 << _SUB_BITS  # per octave: bucket width / value <= 1/1024, like HdrHistogram with 3 digits


def bucket_of(value_us: int) -> int:
    """Lower bound (µs) of the bucket that holds ``value_us``."""
    return _bucket(value_us)


class LatencyHistogram:
    """Counts of response times (µs) per bucket; exact merges, percentile queries."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        if counts:
            self.merge(counts)

    def record_ms(self, value_ms: float) -> None:
        self.record_us(int(value_ms * 1000))

    def record_us(self, value_us: int) -> None:
        bucket = _bucket(value_us)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.total += 1

    def merge(self, other: LatencyHistogram | Mapping[int, int]) -> LatencyHistogram:
        # hot on long runs (a day's histogram holds ~10,000 buckets): one pass, locals, no per-item int() on our own
        if isinstance(other, LatencyHistogram):
            items, total = other.counts.items(), other.total
        else:  # JSON gives string keys
            converted = [(int(b), int(c)) for b, c in other.items()]
            items, total = converted, sum(c for _, c in converted)
        mine = self.counts
        if not mine:
            mine.update(items)
            if len(mine) != len(items):  # "5" and 5 both given: add them up the slow way
                mine.clear()
                for bucket, count in items:
                    mine[bucket] = mine.get(bucket, 0) + count
        else:
            get = mine.get
            for bucket, count in items:
                mine[bucket] = get(bucket, 0) + count
        self.total += total
        return self

    def subtract(self, other: LatencyHistogram) -> LatencyHistogram:
        """Take ``other``'s counts out again (exact): a rolling window slides by adding its newest
        second and subtracting its oldest instead of re-merging every second it holds."""
        mine = self.counts
        for bucket, count in other.counts.items():
            left = mine.get(bucket, 0) - count
            if left < 0:
                raise ValueError(f"histogram: cannot subtract {count} from bucket {bucket} holding {left + count}")
            if left:
                mine[bucket] = left
            else:
                mine.pop(bucket, None)
        self.total -= other.total
        return self

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram | Mapping[int, int]]) -> LatencyHistogram:
        result = cls()
        for histogram in histograms:
            result.merge(histogram)
        return result

    def percentile_ms(self, fraction: float) -> float | None:
        """Value at ``fraction`` (0..1) in ms: the midpoint of the bucket holding that rank."""
        if self.total == 0:
            return None
        rank = max(1, -(-int(round(fraction * self.total * 1e6)) // 1_000_000))  # ceil, float-safe
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return (bucket + _width(bucket) / 2) / 1000 if _width(bucket) > 1 else bucket / 1000
        return max(self.counts) / 1000

    def max_ms(self) -> float | None:
        if not self.counts:
            return None
        top = max(self.counts)
        return (top + _width(top) - 1) / 1000

    def mean_ms(self) -> float | None:
        if self.total == 0:
            return None
        return sum((b + _width(b) / 2) * c for b, c in self.counts.items()) / self.total / 1000

    def to_dict(self) -> dict[int, int]:
        return dict(self.counts)

    def __len__(self) -> int:
        return self.total


# -- a long-lived histogram's counts, held so they stop growing ----------------------------------------
_DENSE_FROM = 96  # buckets of one octave held in a dict until this many, then in an array of 1,024 counts (8 KiB)


class DenseLatencyHistogram:
    """The counts of a :class:`LatencyHistogram` that is only ever merged into for hours: a stage's figures.

    A sparse dict gains a key for every bucket a latency first lands in; a day's stage histogram
    meets ~1,024 buckets an octave per endpoint, slowly (a 160 req/s run held 10,266 buckets after
    18 minutes, still gaining ~600 a minute; ~100 bytes each), so the master's memory grew as long as
    the run. Here each octave's counts (of 1,024 µs below 2,048 µs) start as a small dict and become
    a fixed array of 1,024 counters once :data:`_DENSE_FROM` of its buckets are seen: what it holds
    then grows only when a latency lands in an octave never seen before. The counts are the same,
    exactly: :meth:`to_dict` gives what ``LatencyHistogram.merge`` of the same inputs would hold.
    """

    __slots__ = ("octaves", "total")

    def __init__(self) -> None:
        self.octaves: dict[int, dict[int, int] | array] = {}
        self.total = 0

    def merge(self, other: LatencyHistogram | Mapping[int, int]) -> DenseLatencyHistogram:
        items = other.counts.items() if isinstance(other, LatencyHistogram) else other.items()
        octaves, total = self.octaves, 0
        for bucket, count in items:
            bucket, count = int(bucket), int(count)
            octave, index = octave_and_index(bucket)
            held = octaves.get(octave)
            if held is None:
                held = octaves[octave] = {}
            if type(held) is dict:
                held[index] = held.get(index, 0) + count
                if len(held) >= _DENSE_FROM:
                    dense = array("Q", bytes(8 * _SUB_BUCKETS))
                    for i, n in held.items():
                        dense[i] = n
                    octaves[octave] = dense
            else:
                held[index] += count
            total += count
        self.total += total
        return self

    def to_dict(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for octave in sorted(self.octaves):
            held = self.octaves[octave]
            pairs = held.items() if type(held) is dict else ((i, n) for i, n in enumerate(held) if n)
            counts.update((bucket_at(octave, i), n) for i, n in sorted(pairs))
        return counts

    def __len__(self) -> int:
        return self.total


# The bucket layout, in one place: the buckets below 2 * _SUB_BUCKETS µs are 1 µs wide (octaves 0
# and 1); octave k >= 2 starts at 2 ** (k + _SUB_BITS - 1) µs and holds _SUB_BUCKETS buckets.
def octave_and_index(bucket: int) -> tuple[int, int]:
    """The octave of a bucket's lower bound and its index in that octave."""
    if bucket < 2 * _SUB_BUCKETS:
        return bucket >> _SUB_BITS, bucket & (_SUB_BUCKETS - 1)
    top = bucket.bit_length() - 1
    return top - _SUB_BITS + 1, (bucket - (1 << top)) >> (top - _SUB_BITS)


def bucket_at(octave: int, index: int) -> int:
    """The lower bound (µs) of bucket ``index`` of ``octave``: the inverse of :func:`octave_and_index`."""
    if octave < 2:
        return (octave << _SUB_BITS) + index
    top = octave + _SUB_BITS - 1
    return (1 << top) + (index << (top - _SUB_BITS))


def _width(bucket: int) -> int:
    """Bucket width: 1 µs below 2,048 µs, then doubling every octave (1,024 buckets an octave)."""
    if bucket < 2 * _SUB_BUCKETS:
        return 1
    return 1 << (bucket.bit_length() - _SUB_BITS - 1)


def _bucket(value_us: int) -> int:
    if value_us <= 0:
        return 0
    width = _width(value_us)
    return value_us - value_us % width


# -- coarse buckets, for the run's hour-by-hour histograms -------------------------------------------------
COARSE_SUB_BUCKETS = 32  # per octave: ~3 % wide, a tenth of the buckets; a trend needs no three digits
_COARSE_BITS = COARSE_SUB_BUCKETS.bit_length()  # 6: exact below 64 µs


def coarse_width(bucket_us: int) -> int:
    """Width (µs) of the coarse bucket holding ``bucket_us``: 1 below 64 µs, then 32 buckets an octave."""
    return 1 << max(0, bucket_us.bit_length() - _COARSE_BITS)


def coarse_bucket(bucket_us: int) -> int:
    """Lower bound (µs) of the coarse bucket holding ``bucket_us`` (a fine bucket's lower bound or any value).

    A day's per-interval, per-endpoint histograms are kept in these: 24 hours x 20 endpoints hold
    ~90,000 counts (the bench's synthetic day) instead of ~1 million: ~10 MiB of the master's memory.
    """
    if bucket_us <= 0:
        return 0
    return bucket_us - bucket_us % coarse_width(bucket_us)
