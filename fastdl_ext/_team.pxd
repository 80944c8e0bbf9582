# cython: language_level=3
"""Work sharing for a team of threads running several steps in one parallel region
(the direct convs of a chain, ``direct.pyx``): items taken from a counter, counted
again when finished, and a wait for all of a step's items."""

cdef extern from "fastdl_team.h":
    int _next_items "fastdl_next_items"(int* counter, int count) noexcept nogil
    int _take_items "fastdl_take_items"(int* taken, int threads, int thread, int total,
                                        int chunk, int* first) noexcept nogil
    void _items_done "fastdl_items_done"(int* done, int* sleepers, int count,
                                          int total) noexcept nogil
    void _wait_done "fastdl_wait_done"(int* done, int* sleepers, int total) noexcept nogil
