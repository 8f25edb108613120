"""Which int8 scheme holds on which CPU, and where each scheme's accuracy can be measured for a target CPU.

ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights. Without VNNI (AVX2, and AVX-512
without VNNI) they do it with ``vpmaddubsw``, which adds two uint8 x int8 products into a *saturating* int16:
255 x 127 x 2 = 64770 does not fit, so a layer whose activations and weights are both near their range's end
loses the excess, silently. With VNNI (``vpdpbusd``), on ARM64 (``sdot``/``udot``) and on the older SSE4.1
kernels the sums are exact. Three schemes are measured:

- ``u8s8``: uint8 activations, int8 weights. The most precise and the fastest, exact on ``vnni`` and
  ``arm64``; on ``avx2`` and ``avx512`` it saturates, so its accuracy there must be measured with that
  arithmetic (on such a CPU, or emulated by ``qemu-x86_64``), never assumed from an exact one.
- ``u8s7``: int8 weights in [-64, 64] (``reduce_range``): 2 x 255 x 64 = 32640 fits in int16, so it is exact on
  every CPU, at the same speed as ``u8s8``, with one bit less of weight precision.
- ``u8u8``: uint8 weights, computed in 16-bit pairs: exact everywhere, slower on x86.

``plan_schemes`` is the pure decision (target, host, emulator) -> how each scheme is measured or why it is
left out; ``choose_scheme`` picks among the measured ones. ``host_cpu`` reads this machine's class.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from augforge.errors import AugforgeError, OptionError

TARGETS = ("auto", "avx2", "avx512", "vnni", "arm64")
#: the schemes, fastest and most precise first: the order that breaks ties
SCHEMES = ("u8s8", "u8s7", "u8u8")
#: CPU classes whose u8s8 dot products saturate (``vpmaddubsw``); every other class computes them exactly
SATURATING = frozenset({"avx2", "avx512"})
#: the CPU model ``qemu-x86_64 -cpu`` emulates for each arithmetic: Haswell (AVX2) saturates, Westmere
#: (SSE4.1) is exact. TCG emulates no AVX-512, and AVX-512 without VNNI saturates exactly as AVX2 does.
EMULATED_CPU = {"saturating": "Haswell", "exact": "Westmere"}
EMULATOR = "qemu-x86_64"


@dataclass(frozen=True)
class Measurement:
    """How one scheme's accuracy is measured for a target: ``where`` is ``native`` (this process),
    ``qemu-x86_64 -cpu MODEL`` (emulated arithmetic of the target's kind), or None: left out, ``reason`` says
    why."""

    scheme: str
    where: str | None
    reason: str


def arithmetic(cpu: str) -> str:
    """``saturating`` or ``exact``: how ``cpu``'s u8s8 kernels add their products."""
    return "saturating" if cpu in SATURATING else "exact"


def cpu_class(flags: set[str] | frozenset[str], machine: str) -> str:
    """The int8 class of a CPU from its ``/proc/cpuinfo`` flags and ``platform.machine()``: ``arm64``,
    ``vnni`` (AVX512-VNNI or AVX-VNNI), ``avx512`` (AVX512BW without VNNI), ``avx2``, or ``sse`` (older x86,
    whose SSE4.1 kernels are exact)."""
    if machine.lower() in ("aarch64", "arm64"):
        return "arm64"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "sse"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first processor in ``cpuinfo`` (empty where the file is absent, as on macOS)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def dot_probe(weight: int = 127, dtype: str = "int8") -> bytes:
    """An ONNX model (serialized) of one dot product of 64 uint8 inputs with ``weight`` (``dtype`` int8 or
    uint8), whose output's argmax is 0 when ONNX Runtime sums it exactly and 1 when it comes out lower
    (pairs saturated in int16). With 255 inputs and weight 127: exactly 2,072,640, saturated 1,048,544."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    exact = 255 * weight * 64
    weights = numpy_helper.from_array(np.full((64, 1), weight, np.dtype(dtype)), "w")
    threshold = numpy_helper.from_array(np.array([[exact - 0.5]], np.float32), "t")
    nodes = [helper.make_node("MatMulInteger", ["a", "w"], ["s"]),
             helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Concat", ["f", "t"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weights, threshold])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


#: the input every ``dot_probe`` is run on
PROBE_INPUT = (255,) * 64


def measured_arithmetic() -> str:
    """``saturating`` or ``exact``, measured: ONNX Runtime's own kernel runs ``dot_probe`` (255 x 127 over 64
    terms) here. CPUID decides the kernel, and the flags in /proc/cpuinfo can differ from it (under an
    emulator, or a hypervisor that masks features)."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(dot_probe(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"a": np.array([PROBE_INPUT], np.uint8)})[0]
    return "exact" if int(out.argmax(-1)[0]) == 0 else "saturating"


def host_cpu() -> str:
    """This machine's int8 class: ``cpu_class`` of its flags where their arithmetic is the one measured here
    (``measured_arithmetic``); otherwise the measurement wins (``avx2`` when it saturates, ``sse`` when it
    does not)."""
    named = cpu_class(cpu_flags(), platform.machine())
    measured = measured_arithmetic()
    if arithmetic(named) == measured:
        return named
    return "avx2" if measured == "saturating" else "sse"


def emulator_available() -> bool:
    """Whether this machine can run x86 code under another CPU model: an x86_64 host with ``qemu-x86_64``
    (Debian's qemu-user) on PATH."""
    return platform.machine().lower() in ("x86_64", "amd64") and shutil.which(EMULATOR) is not None


def resolve_target(target: str, host: str) -> str:
    """``target`` checked against ``TARGETS``; ``auto`` becomes the host's class (``sse`` hosts too)."""
    if target not in TARGETS:
        raise OptionError("{target} {value}: expected one of {choices}", value=target, choices=", ".join(TARGETS))
    return host if target == "auto" else target


def plan_schemes(target: str, host: str, emulator: bool) -> list[Measurement]:
    """For each scheme, how its accuracy on ``target`` is measured from ``host`` (see the module docstring).
    ``u8s7`` and ``u8u8`` are exact everywhere, so this CPU measures them for any target; ``u8s8`` is measured
    natively where the host's arithmetic is the target's, emulated where it is not and ``emulator`` is true,
    and left out otherwise."""
    plans = []
    for scheme in SCHEMES:
        if scheme != "u8s8":
            plans.append(Measurement(scheme, "native", f"{scheme} is exact on every CPU: measured here"))
        elif arithmetic(target) == arithmetic(host):
            kind = arithmetic(target)
            plans.append(Measurement(scheme, "native", f"u8s8 is {kind} on {target} as on this {host} CPU: "
                                                       "measured here"))
        elif emulator:
            model = EMULATED_CPU[arithmetic(target)]
            plans.append(Measurement(scheme, f"{EMULATOR} -cpu {model}",
                                     f"u8s8 is {arithmetic(target)} on {target} but {arithmetic(host)} on this "
                                     f"{host} CPU: measured under {EMULATOR} -cpu {model}"))
        else:
            plans.append(Measurement(scheme, None,
                                     f"u8s8 is {arithmetic(target)} on {target} but {arithmetic(host)} on this "
                                     f"{host} CPU, and without {EMULATOR} (Debian's qemu-user) it cannot be "
                                     "measured here: left out"))
    return plans


def choose_scheme(agreement: dict[str, float]) -> str:
    """The scheme whose predictions agree most with the float model's; ties go to the earlier of ``SCHEMES``."""
    if not agreement:
        raise AugforgeError("no int8 scheme could be measured for this target")
    return max(agreement, key=lambda scheme: (agreement[scheme], -SCHEMES.index(scheme)))


def target_warning(target: str, host: str) -> str | None:
    """The report's warning when the int8 model is meant for another CPU class than the one measuring it."""
    if target == host:
        return None
    return (f"the int8 model is meant for {target} CPUs but was measured on this {host} CPU: its latencies are this "
            f"CPU's, and its accuracies hold for {target} only as far as the measurements above say")
