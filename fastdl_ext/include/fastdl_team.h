/* Work sharing for a chain of convs in one parallel region (direct.pyx; declared for
   Cython in _team.pxd). A layer's items are taken from a counter and counted again
   when finished; a thread moves on to the next layer once every item of this one is
   done, whoever did it. No thread waits for another to *arrive*: a worker still being
   woken (tens to hundreds of microseconds on a virtual machine whose host is busy) or
   asleep in a wait joins at whatever layer the others have reached, instead of
   holding the team at a barrier. A waiter spins for a while, as the last items finish
   within microseconds, and then sleeps on a futex (OpenMP's own barrier sleeps at
   once under the passive wait policy the package sets, so that idle workers never
   steal cores). Spinning longer (4000 pauses, ~120 us here) or yielding instead of
   sleeping held the core that the awaited thread needed whenever another process
   was busy: batch-1 ResNet-20 took 5.3 ms instead of 2-2.5 ms. */

#ifndef FASTDL_TEAM_H
#define FASTDL_TEAM_H

#include <limits.h>
#include <sched.h>
#if defined(__linux__)
#  include <linux/futex.h>
#  include <sys/syscall.h>
#  include <unistd.h>
#endif
#define FASTDL_WAIT_SPINS 300
static inline int fastdl_next_items(int *counter, int count) {
    return __atomic_fetch_add(counter, count, __ATOMIC_RELAXED);
}
/* The next items for ``thread``: up to ``chunk`` of ``total`` from ``*first`` on, as
   their count (0: none left). Each thread has a share, chunks [t u / threads,
   (t + 1) u / threads) of the u chunks, ``taken[t]`` counting what was taken of it;
   a thread takes from its own share first and then from the others'. Layer after
   layer a thread so computes the same rows and images, which it then reads from
   its own cache (the other core's lines cost a transfer each), while a thread that
   is late or asleep still has its share done by the others. */
static int fastdl_take_items(int *taken, int threads, int thread, int total, int chunk,
                             int *first) {
    int units = (total + chunk - 1) / chunk;
    for (int k = 0; k < threads; k++) {
        int owner = (thread + k) % threads;
        int start = (int)((long)owner * units / threads) * chunk;
        int end = (int)((long)(owner + 1) * units / threads) * chunk;
        end = end < total ? end : total;
        if (__atomic_load_n(&taken[owner], __ATOMIC_RELAXED) >= end - start)
            continue;
        int at = start + __atomic_fetch_add(&taken[owner], chunk, __ATOMIC_RELAXED);
        if (at < end) {
            *first = at;
            return end - at < chunk ? end - at : chunk;
        }
    }
    return 0;
}
/* ``count`` more items of ``total`` finished; the last wakes the sleepers. Sequentially
   consistent with the sleepers' count: a waiter either sees the total or is counted
   before the wake-up. The add releases the items' outputs to the waiters. */
static void fastdl_items_done(int *done, int *sleepers, int count, int total) {
    if (__atomic_add_fetch(done, count, __ATOMIC_SEQ_CST) == total
            && __atomic_load_n(sleepers, __ATOMIC_SEQ_CST) > 0) {
#if defined(__linux__)
        syscall(SYS_futex, done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
    }
}
/* Until ``total`` items are done (acquiring their outputs). */
static void fastdl_wait_done(int *done, int *sleepers, int total) {
    for (long spins = 0;; spins++) {
        int seen = __atomic_load_n(done, __ATOMIC_ACQUIRE);
        if (seen >= total)
            return;
        if (spins < FASTDL_WAIT_SPINS) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            continue;
        }
#if defined(__linux__)
        __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
        /* the kernel sleeps only while the count is still the one seen */
        seen = __atomic_load_n(done, __ATOMIC_SEQ_CST);
        if (seen < total)
            syscall(SYS_futex, done, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
        __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
#else
        sched_yield();
#endif
    }
}

#endif  /* FASTDL_TEAM_H */
