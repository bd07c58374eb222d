"""A/B of each speed trick, in one process, interleaved; min of repeats, ns per call."""
import threading, timeit, itertools
import anyio
from meshkit import CircuitOpenError, SYSTEM_CLOCK
from meshkit.resilience import CircuitBreaker, CircuitBreakerConfig, Timeout, Deadline
from meshkit.resilience import _breaker, _deadline

N = 20000
def best(fn, rounds=9):
    return min(timeit.repeat(fn, number=1, repeat=rounds)) / N * 1e9

def target(): return 1

def loop_call(call):
    def run():
        for _ in range(N): call(target)
    return run

def loop_reject(call):
    def run():
        for _ in range(N):
            try: call(target)
            except CircuitOpenError: pass
    return run

results = {}
def ab(name, a, b):
    ra, rb = [], []
    for _ in range(5):
        ra.append(best(a)); rb.append(best(b))
    results[name] = (min(ra), min(rb))
    print(f"{name:40s} trick {min(ra):7.0f} ns   plain {min(rb):7.0f} ns   plain/trick {min(rb)/min(ra):.2f}")

# 1. lock-free success counting (itertools.count, read back by repr) vs counting under the lock
brk = CircuitBreaker(CircuitBreakerConfig(failure_threshold=5, open_duration=60))
class Locked:
    def __init__(self, b):
        self.b = b; self.lock = threading.Lock(); self.n = 0
    def call_sync(self, fn, *args, **kwargs):
        core = self.b._core
        permit = core.fast_permit or self.b._admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.b._on_exception(permit, exc); raise
        if permit is core.fast_permit:
            with self.lock:
                self.n += 1
        else:
            self.b._on_result(permit, result)
        return result
ab("breaker success: lock-free count", loop_call(brk.call_sync), loop_call(Locked(brk).call_sync))

# 2. rejection: BaseException.__new__ vs the error's constructor
open_brk = CircuitBreaker(CircuitBreakerConfig(failure_threshold=5, open_duration=60))
open_brk.force_open(); open_brk.reset()
for _ in range(5):
    try: open_brk.call_sync(lambda: 1/0)
    except ZeroDivisionError: pass
def with_init():
    _breaker._new_error = type.__call__
def with_new():
    _breaker._new_error = BaseException.__new__
ra, rb = [], []
for _ in range(5):
    with_new(); ra.append(best(loop_reject(open_brk.call_sync)))
    with_init(); rb.append(best(loop_reject(open_brk.call_sync)))
with_new()
print(f"{'breaker rejection: C constructor':40s} trick {min(ra):7.0f} ns   plain {min(rb):7.0f} ns   plain/trick {min(rb)/min(ra):.2f}")

# 3. clock read: time.monotonic directly vs SystemClock.now
now_direct = open_brk._now
ra, rb = [], []
for _ in range(5):
    open_brk._now = now_direct; ra.append(best(loop_reject(open_brk.call_sync)))
    open_brk._now = SYSTEM_CLOCK.now; rb.append(best(loop_reject(open_brk.call_sync)))
open_brk._now = now_direct
print(f"{'breaker rejection: time.monotonic direct':40s} trick {min(ra):7.0f} ns   plain {min(rb):7.0f} ns   plain/trick {min(rb)/min(ra):.2f}")

# 4. Timeout.call_sync: _trusted_deadline vs a validated Deadline
trusted = _deadline._trusted_deadline
def validated(expires_at, clock):
    return Deadline(expires_at=expires_at, clock=clock)
t = Timeout(5.0)
ra, rb = [], []
for _ in range(5):
    _deadline._trusted_deadline = trusted; ra.append(best(loop_call(t.call_sync)))
    _deadline._trusted_deadline = validated; rb.append(best(loop_call(t.call_sync)))
_deadline._trusted_deadline = trusted
print(f"{'Timeout.call_sync: trusted Deadline':40s} trick {min(ra):7.0f} ns   plain {min(rb):7.0f} ns   plain/trick {min(rb)/min(ra):.2f}")
