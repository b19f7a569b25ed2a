"""The Triton step kernels compile for sm_80 and sm_90 on a machine without a GPU.

The interpreter (root conftest.py) never compiles a kernel, so a kernel that runs in the tests
could still fail to compile for a GPU. Triton's ahead-of-time compiler lowers every variant the
package launches (g2lstm.kernels.triton_lstm.launch_variants) to PTX and a cubin, in a subprocess
without TRITON_INTERPRET. The suite compiles a representative subset (the whole table takes
~80 s); .ci/run compiles all of it. The table itself is checked against what the launcher really
launches, so that a new variant cannot be left out of it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from g2lstm import G2LSTM, kernels
from g2lstm.reference import EVAL_GATES, GATE_MODES, TRAIN_GATES

pytestmark = pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")

ROOT = Path(__file__).resolve().parents[1]


def _launch_key(kernel, args, constexprs) -> tuple:
    """What makes a compiled variant: the kernel, the generic Triton type of each argument, the constexprs."""
    from triton.runtime.jit import mangle_type

    return kernel.fn.__name__, tuple(mangle_type(arg) for arg in args), tuple(sorted(constexprs.items()))


class _Recorder:
    """A step kernel that records the variant of each launch, then launches it."""

    def __init__(self, kernel, seen: set):
        self.kernel, self.seen = kernel, seen

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **constexprs):
            self.seen.add(_launch_key(self.kernel, args, constexprs))
            return launch(*args, **constexprs)

        return run


def test_every_launch_is_a_listed_variant(monkeypatch):
    """G2LSTM modules over every gate option, mode and noise setting, with and without projection
    and lengths, in float32 and under float16/bfloat16 autocast: each launch they make is in the
    table the AOT compile reads, and in float32 they launch every variant it lists."""
    from g2lstm.kernels import triton_lstm

    table = {_launch_key(v.kernel, v.args, v.constexprs) for v in triton_lstm.launch_variants()}
    seen = set()
    monkeypatch.setattr(triton_lstm, "_forward_step_kernel", _Recorder(triton_lstm._forward_step_kernel, seen))
    monkeypatch.setattr(triton_lstm, "_backward_step_kernel", _Recorder(triton_lstm._backward_step_kernel, seen))
    names = ("input", "forget", "output")
    subsets = [s for size in range(4) for s in itertools.combinations(names, size)]
    shapes = itertools.cycle([(False, False), (True, True), (True, False), (False, True)])  # projection, lengths
    runs = [(gates, stochastic, eval_gates, train_gates, training, noise_p, torch.float32)
            for gates in GATE_MODES for stochastic in subsets for eval_gates in EVAL_GATES
            for training in (True, False)
            for train_gates in (TRAIN_GATES if training and gates != "sigmoid" else ("soft",))
            for noise_p in ((0.5, 0.0) if gates == "gumbel" and training else (0.5,))]
    runs += [("gumbel", ("input", "forget"), "soft", "soft", True, 0.5, dtype)
             for dtype in (torch.float16, torch.bfloat16)]
    for gates, stochastic, eval_gates, train_gates, training, noise_p, dtype in runs:
        proj, lengths = next(shapes)
        torch.manual_seed(0)
        module = G2LSTM(3, 4, proj_size=2 if proj else 0, gates=gates, stochastic_gates=stochastic,
                        eval_gates=eval_gates, train_gates=train_gates, noise_p=noise_p,
                        impl="triton").train(training)
        x = torch.randn(2, 2, 3)
        if lengths:
            x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([2, 1]))
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = module(x)[0]
        (out.data if lengths else out).float().sum().backward()  # .data: a PackedSequence's values
    assert seen - table == set(), "launched, but not in launch_variants()"
    float32 = {key for key in table if key[1][0] == "*fp32"}  # the gates' pointer
    assert float32 - seen == set(), "listed, but no G2LSTM launches it"
    assert {key[1][0] for key in seen} == {"*fp32", "*fp16", "*bf16"}


def test_the_table_has_every_dtype_plan_and_backward():
    from g2lstm.kernels import triton_aot, triton_lstm
    from g2lstm.kernels.common import launched_gate_plans

    launches = triton_lstm.launch_variants()
    # 7 subsets of (i, f, o) x (scaled, noisy, hard, straight-through scaled and noisy), and all plain
    assert len(launched_gate_plans()) == 36
    assert len(launches) == len(kernels.TRITON_DTYPES) * (36 + 4)
    assert len({launch.name for launch in launches}) == len(launches)
    subset = triton_aot.representative(launches)
    assert {launch.name for launch in launches if launch.name.startswith("backward-")} <= {s.name for s in subset}
    for dtype in ("float32", "float16", "bfloat16"):
        forwards = [s.constexprs for s in subset if s.name.startswith(f"forward-{dtype}-")]
        covered = {(gate, c[f"KIND_{gate}"]) for c in forwards for gate in "IFO"}
        assert covered == {(gate, kind) for gate in "IFO" for kind in range(6)}, dtype
        assert len(forwards) == 6, dtype


def _without_interpreter(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "triton-cache"), TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _skip_without_ptxas(stderr: str):
    if "ptxas" in stderr and ("not found" in stderr or "No such file" in stderr):
        pytest.skip("Triton's ptxas is not available")


def test_the_kernels_compile_for_sm80_and_sm90(tmp_path):
    """The representative subset, each variant generic and with the JIT's value specialisations
    (batch 1 gives a constexpr N), to PTX and cubin for sm_80 and sm_90, from a cold cache."""
    done = subprocess.run([sys.executable, "-m", "g2lstm.kernels.triton_aot", "--specialize"],
                          env=_without_interpreter(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600)
    _skip_without_ptxas(done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "120 of 120 compiled (30 of 120 variants, sm_80, sm_90)" in done.stdout, done.stdout[-2000:]


BROKEN = '''
import torch
import triton
import triton.language as tl

from g2lstm.kernels.triton_aot import compile_launch
from g2lstm.kernels.triton_lstm import KernelLaunch


@triton.jit
def broken(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)  # BLOCK = 3: not a power of 2, which Triton refuses
    tl.store(x_ptr + offs, offs)


try:
    compile_launch(KernelLaunch("broken", broken, (torch.zeros(3),), dict(BLOCK=3)), 90)
except Exception as error:
    print("refused:", type(error).__name__)
else:
    print("compiled")
'''


def test_a_kernel_that_cannot_compile_is_reported(tmp_path):
    """The negative control: the compile raises, it does not pass quietly."""
    script = tmp_path / "broken_kernel.py"  # a file: triton.jit reads the kernel's source
    script.write_text(textwrap.dedent(BROKEN))
    done = subprocess.run([sys.executable, str(script)], env=_without_interpreter(tmp_path), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    _skip_without_ptxas(done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: CompilationError" in done.stdout, done.stdout + done.stderr[-2000:]


def test_the_aot_compile_refuses_interpreted_kernels():
    """Under TRITON_INTERPRET=1 (this process) the kernels are the interpreter's: a clear error."""
    from g2lstm.kernels import triton_aot, triton_lstm

    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 replaces the kernels"):
        triton_aot.compile_launch(triton_lstm.launch_variants()[0], 90)
