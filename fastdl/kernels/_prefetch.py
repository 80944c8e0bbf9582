"""``prefetch(array)`` and ``prefetch_for_write(array)`` for Numba kernels: ask the
caches for an array a loop reads (or writes) next.

Plain Python functions (so that kernels still run with ``NUMBA_DISABLE_JIT=1``,
where they do nothing) with compiled overloads that issue LLVM's prefetch
intrinsic for every 64-byte line of a 1-D contiguous array. For writing, the line
is requested in a state a store can take at once, so the store does not wait for
the read-for-ownership (x86 ``prefetchw``). Intrinsics, not calls into C: kernels
that use them stay cacheable on disk.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = ["prefetch", "prefetch_for_write"]

_LINE = 64   # bytes a prefetch brings in (x86-64, AArch64)


def prefetch(array):
    """Bring a 1-D contiguous ``array`` towards the cache, for reading soon (compiled;
    nothing to do when not)."""


def prefetch_for_write(array):
    """Bring a 1-D contiguous ``array`` towards the cache, for writing soon (compiled;
    nothing to do when not)."""


def _prefetch_lines_of(write):
    """The intrinsic prefetching every line of an array (``write``: LLVM's rw flag)."""

    @intrinsic
    def prefetch_lines(typingctx, array):
        if not isinstance(array, types.Array):
            return None

        def codegen(context, builder, signature, args):
            view = context.make_array(signature.args[0])(context, builder, args[0])
            byte_pointer = ir.IntType(8).as_pointer()
            # the intrinsic's name carries its pointer type: i8* before LLVM's opaque pointers
            suffix = "p0" if str(byte_pointer) == "ptr" else "p0i8"
            function = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3),
                "llvm.prefetch." + suffix)
            base = builder.bitcast(view.data, byte_pointer)
            size = builder.mul(view.nitems, context.get_constant(
                types.intp,
                context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))))
            flags = [ir.Constant(ir.IntType(32), value) for value in (int(write), 3, 1)]
            with cgutils.for_range_slice(builder, context.get_constant(types.intp, 0), size,
                                         context.get_constant(types.intp, _LINE)) as (offset, _):
                builder.call(function, [builder.gep(base, [offset])] + flags)
            return context.get_dummy_value()
        return types.void(array), codegen
    return prefetch_lines


def _overload_with(function, prefetch_lines):
    @overload(function, jit_options={"nogil": True})
    def compiled(array):
        if isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C":
            return lambda array: prefetch_lines(array)
        return None
    return compiled


_overload_with(prefetch, _prefetch_lines_of(write=False))
_overload_with(prefetch_for_write, _prefetch_lines_of(write=True))
