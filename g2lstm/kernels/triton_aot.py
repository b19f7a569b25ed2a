"""Compile the Triton step kernels ahead of time, for GPUs this machine need not have.

Every variant the package launches (:func:`g2lstm.kernels.triton_lstm.launch_variants`) goes
through Triton's own compiler to PTX and a cubin for a given architecture, as the JIT would on
that GPU at first launch: a kernel that does not compile fails here, in CI, and not for a user.

    TRITON_CACHE_DIR=$(mktemp -d) python -m g2lstm.kernels.triton_aot --all

Without ``--all``: a representative subset (:func:`representative`), what the test suite runs.
``TRITON_INTERPRET=1`` must be unset: it replaces the kernels by the interpreter's, which do not
compile. Compiled kernels land in Triton's cache (``TRITON_CACHE_DIR``); a warm cache skips the
compile, hence the fresh directory above.
"""

from __future__ import annotations

import argparse
import sys
import time

ARCHS = (80, 90)  # A100, H100/H200


def _triton():
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    return triton, GPUTarget, ASTSource, JITFunction


def compile_args(launch, specialize: bool = False) -> tuple[dict, dict, dict]:
    """``(signature, constexprs, attrs)`` of ``launch`` as Triton's JIT builds them at a launch.

    ``specialize=False``: every argument at its generic type (ints i32 or i64 by value, floats
    fp32, pointers by dtype), the kernel that runs any values. ``specialize=True``: also what the
    JIT specialises on (an int equal to 1 becomes a constexpr; ints and pointers divisible by 16
    get a divisibility hint), unless the kernel says ``do_not_specialize``.
    """
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kernel = launch.kernel
    names = [p.name for p in kernel.params if not p.is_constexpr]
    if len(names) != len(launch.args):
        raise ValueError(f"{launch.name}: {len(launch.args)} arguments for the {len(names)} of {kernel.fn.__name__}")
    values = dict(zip(names, launch.args))
    signature, constexprs, attrs = {}, {}, {}
    for index, param in enumerate(kernel.params):
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(index,)] = launch.constexprs[param.name]
            continue
        kind, spec = native_specialize_impl(BaseBackend, values[param.name], False,
                                            specialize and not param.do_not_specialize,
                                            specialize and not getattr(param, "do_not_specialize_on_alignment", False))
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[(index,)] = spec
        elif isinstance(spec, str) and spec:
            attrs[(index,)] = BaseBackend.parse_attr(spec)
    return signature, constexprs, attrs


def compile_launch(launch, arch: int, specialize: bool = False):
    """Compile one variant for ``sm_<arch>``; the compiled kernel, with its PTX and cubin."""
    triton, GPUTarget, ASTSource, JITFunction = _triton()
    if not isinstance(launch.kernel, JITFunction):
        raise RuntimeError(f"{launch.name}: the kernel is a {type(launch.kernel).__name__}, not a JITFunction: "
                           "TRITON_INTERPRET=1 replaces the kernels by the interpreter's; unset it")
    signature, constexprs, attrs = compile_args(launch, specialize)
    compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs),
                              target=GPUTarget("cuda", arch, 32))
    for stage in ("ptx", "cubin"):
        if not compiled.asm.get(stage):
            raise RuntimeError(f"{launch.name}: no {stage} for sm_{arch}")
    return compiled


def representative(launches) -> list:
    """A subset: every backward variant and, per dtype, forward plans that give each gate each of
    its formulas (plain, scaled, noisy, hard, straight-through scaled and noisy) once, chosen
    greedily (in practice 6 per dtype)."""
    chosen = [launch for launch in launches if launch.name.startswith("backward-")]
    forwards = [launch for launch in launches if launch.name.startswith("forward-")]
    for dtype in dict.fromkeys(launch.name.split("-")[1] for launch in forwards):
        candidates = [launch for launch in forwards if launch.name.split("-")[1] == dtype]

        def features(launch):
            c = launch.constexprs
            return {(gate, c[f"KIND_{gate}"]) for gate in "IFO"}

        missing = set().union(*map(features, candidates))
        while missing:
            best = max(candidates, key=lambda launch: len(features(launch) & missing))
            chosen.append(best)
            missing -= features(best)
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="every variant, not the representative subset")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities (80 = sm_80)")
    parser.add_argument("--specialize", action="store_true",
                        help="also compile each with the JIT's value specialisations (batch 1, hidden 16)")
    args = parser.parse_args(argv)
    from .triton_lstm import launch_variants

    launches = launch_variants()
    chosen = launches if args.all else representative(launches)
    modes = [False, True] if args.specialize else [False]
    failures, count, start = [], 0, time.perf_counter()
    for arch in args.arch:
        for launch in chosen:
            for specialize in modes:
                label = f"sm_{arch} {launch.name}{' specialized' if specialize else ''}"
                began = time.perf_counter()
                try:
                    compile_launch(launch, arch, specialize)
                except Exception as error:  # every failure reported, not only the first
                    failures.append(f"{label}: {type(error).__name__}: {str(error).strip()[-2000:]}")
                    print(f"FAILED {label}", flush=True)
                else:
                    print(f"ok {label} {time.perf_counter() - began:.2f} s", flush=True)
                count += 1
    total = time.perf_counter() - start
    print(f"{count - len(failures)} of {count} compiled ({len(chosen)} of {len(launches)} variants, "
          f"sm_{', sm_'.join(map(str, args.arch))}) in {total:.1f} s")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
