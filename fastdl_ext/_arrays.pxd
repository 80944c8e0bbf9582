# cython: language_level=3
"""Checked access to ndarrays through NumPy's C API, for the prepared inference calls.

A module that cimports these calls ``cnp.import_array()`` first.

Typed memoryviews cost an object per array per call; at batch 1 the garbage
collector they set off took 3 % of a ResNet's time. These read the shape and data
pointer directly, after checking what a memoryview would have checked.
"""
cimport numpy as cnp


cdef inline cnp.npy_intp* _dims(str function, object array, str name, int ndim, int typenum,
                               bint writable) except NULL:
    """The shape of ``array``, once it is checked to be a C-contiguous ndarray of ``ndim``
    dimensions and dtype ``typenum`` (and writable); else a ValueError naming
    ``function`` and ``name``."""
    if not (cnp.PyArray_Check(array) and cnp.PyArray_NDIM(<cnp.ndarray>array) == ndim
            and cnp.PyArray_TYPE(<cnp.ndarray>array) == typenum
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>array)
            and (not writable or cnp.PyArray_ISWRITEABLE(<cnp.ndarray>array))):
        raise ValueError("%s: %s must be a C-contiguous%s %d-D %s array, got %s %r"
                         % (function, name, " writable" if writable else "", ndim,
                            "float32" if typenum == cnp.NPY_FLOAT32 else "float64",
                            getattr(array, "dtype", ""),
                            getattr(array, "shape", type(array))))
    return cnp.PyArray_DIMS(<cnp.ndarray>array)


cdef inline void* _data(object array) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>array)


cdef inline int _float_type(str function, object array) except -1:
    """NumPy's type number of a float32 or float64 ndarray; else a TypeError."""
    if not (cnp.PyArray_Check(array) and cnp.PyArray_TYPE(<cnp.ndarray>array) in (
            cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
        raise TypeError("%s: x must be a float32 or float64 ndarray, got %r"
                        % (function, getattr(array, "dtype", type(array))))
    return cnp.PyArray_TYPE(<cnp.ndarray>array)
