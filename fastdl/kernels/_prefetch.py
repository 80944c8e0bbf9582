"""``prefetch(array)`` for Numba kernels: ask the caches for an array a loop reads next.

A plain Python function (so that kernels still run with ``NUMBA_DISABLE_JIT=1``,
where it does nothing) with a compiled overload that issues LLVM's prefetch
intrinsic for every 64-byte line of a 1-D contiguous array. An intrinsic, not a
call into C: kernels that use it stay cacheable on disk.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = ["prefetch"]

_LINE = 64   # bytes a prefetch brings in (x86-64, AArch64)


def prefetch(array):
    """Bring a 1-D contiguous ``array`` towards the cache, for reading soon (compiled;
    nothing to do when not)."""


@intrinsic
def _prefetch_lines(typingctx, array):
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        byte_pointer = ir.IntType(8).as_pointer()
        # the intrinsic's name carries its pointer type: i8* before LLVM's opaque pointers
        suffix = "p0" if str(byte_pointer) == "ptr" else "p0i8"
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3),
            "llvm.prefetch." + suffix)
        base = builder.bitcast(view.data, byte_pointer)
        size = builder.mul(view.nitems, context.get_constant(
            types.intp, context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))))
        read, keep, data = (ir.Constant(ir.IntType(32), value) for value in (0, 3, 1))
        with cgutils.for_range_slice(builder, context.get_constant(types.intp, 0), size,
                                     context.get_constant(types.intp, _LINE)) as (offset, _):
            builder.call(function, [builder.gep(base, [offset]), read, keep, data])
        return context.get_dummy_value()
    return types.void(array), codegen


@overload(prefetch, jit_options={"nogil": True})
def _prefetch_compiled(array):
    if isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C":
        return lambda array: _prefetch_lines(array)
    return None
