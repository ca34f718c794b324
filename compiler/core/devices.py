"""Device profiles: what a target needs to know about a phone or Mac (`fusionc devices`).

Every figure carries its public source in a comment; where a vendor publishes nothing (Qualcomm gives no Hexagon
TOPS, Apple no ANE int8/fp16 split), the comment says the figure is an estimate and where it comes from.
Throughput and bandwidth feed the latency cost model (fusionc.analysis.costmodel), which calibrates one efficiency per
NPU family on published latencies and scales it across the family's devices by these figures, so a wrong absolute
peak shows up as a per-device error in the cost model's held-out figures (documented there), not as a silent bias.
CPU profiles (target onnx, family cpu) describe the cores ONNX Runtime's CPU provider runs on -- a phone's big
cores, where most Android phones run diffusion because QNN has no NPU path on them -- with `peak_tops` computed
from core counts, clocks and SIMD width (the comment shows the arithmetic; vendors publish no CPU TOPS).
`max_model_bytes` drives Core ML chunking and QNN context splitting; `hexagon_arch`/`soc_model` select the QNN
HTP backend's compile target.

Names: `name` is the slug a build records ("iphone-14-pro"); `title` is what people call the device
("iPhone 14 Pro", "Snapdragon 8 Gen 2"). `find_device` (and so `--device`) accepts the slug, the title or the
SoC ("A16 Bionic", "SM8550") in any case and spacing: "iphone 14 pro", "Snapdragon8Gen2", "sm8550".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fusionc.core.errors import BadInputError


@dataclass(frozen=True)
class Device:
    name: str
    vendor: str  # apple | qualcomm
    soc: str
    target: str  # the fusionc target that builds for it: coreml | qnn
    compute_units: tuple[str, ...]
    peak_tops: dict[str, float] = field(default_factory=dict)  # precision -> dense TOPS on the NPU
    memory_bandwidth_gbs: float = 0.0
    max_model_bytes: int | None = None  # largest single model the NPU loads comfortably
    hexagon_arch: str | None = None  # v73, v75, v79
    soc_model: int | None = None  # QNN HTP soc_model id
    deployment_target: str | None = None
    # added for the cost model and `fusionc devices`
    npu: str = ""  # the compute unit the cost model estimates: ne (Apple Neural Engine) | htp (Hexagon)
    family: str = ""  # cost-model calibration family: one efficiency set per family (ane, htp)
    gpu_tflops_fp32: float | None = None  # only where the vendor publishes it
    memory_bytes: int | None = None  # device RAM (the smallest configuration sold)
    year: int | None = None
    title: str = ""  # the name people say ("iPhone 14 Pro"); empty: derived from the slug (words capitalized)

    @property
    def display_name(self) -> str:
        return self.title or " ".join(w.capitalize() if w.isalpha() else w for w in self.name.split("-"))
    cpu_arch: str | None = None  # CPU profiles: arm64 | x86_64 (what ORT's CPU provider has kernels for)
    big_cores: str | None = None  # CPU profiles: the cores the estimate counts (ORT's intra-op threads)

    def npu_macs_per_s(self, precision: str) -> float:
        """Peak multiply-accumulates per second at `precision` (TOPS counts 2 ops per MAC)."""
        if precision not in self.peak_tops:
            raise BadInputError(f"device '{self.name}' has no {precision} throughput: pick one of {sorted(self.peak_tops)}")
        return self.peak_tops[precision] * 1e12 / 2

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


GB = 1 << 30

DEVICES: dict[str, Device] = {
    d.name: d
    for d in [
        # A16: ANE 17 TOPS (Apple iPhone 14 Pro keynote and apple.com/iphone-14-pro/specs, 2022), taken as the fp16
        # rate (the A15/A16 ANE has no faster int8 path: coremltools docs, "Performance" of W8A8 quantization, says
        # int8-int8 compute is faster only on A17 Pro / M4 and newer). LPDDR5 51.2 GB/s (6400 MT/s x 64 bit: the
        # LPDDR5 standard rate at the A16's bus width, as reported by teardown/analysis sites; Apple does not publish).
        # ~1 GB per ANE model: apple/ml-stable-diffusion README (`--chunk-unet` is required on iOS/iPadOS).
        # 6 GB RAM (widely reported; Apple does not publish RAM sizes).
        Device("iphone-14-pro", "apple", "A16 Bionic", "coreml", ("cpu", "gpu", "ne"), {"fp16": 17.0},
               51.2, 1 * GB, deployment_target="iOS16", npu="ne", family="ane", memory_bytes=6 * GB, year=2022,
               title="iPhone 14 Pro"),
        # A17 Pro: ANE 35 TOPS (Apple iPhone 15 Pro keynote, 2023). The 35 TOPS is the int8 rate (coremltools docs:
        # W8A8 runs the ANE's int8-int8 path on A17 Pro); fp16 taken as half of it (an inference from the A16's
        # 17 TOPS fp16, not published). LPDDR5 51.2 GB/s as A16 (not published); 8 GB RAM (widely reported).
        Device("iphone-15-pro", "apple", "A17 Pro", "coreml", ("cpu", "gpu", "ne"), {"int8": 35.0, "fp16": 17.5},
               51.2, 1 * GB, deployment_target="iOS17", npu="ne", family="ane", memory_bytes=8 * GB, year=2023,
               title="iPhone 15 Pro"),
        # A18 Pro: ANE 35 TOPS (Apple iPhone 16 Pro keynote, 2024), int8 as for A17 Pro, fp16 half (inference).
        # LPDDR5X-7500, 60 GB/s (Apple: "17 percent more system memory bandwidth" than A17 Pro, 51.2 x 1.17).
        Device("iphone-16-pro", "apple", "A18 Pro", "coreml", ("cpu", "gpu", "ne"), {"int8": 35.0, "fp16": 17.5},
               60.0, 1 * GB, deployment_target="iOS18", npu="ne", family="ane", memory_bytes=8 * GB, year=2024,
               title="iPhone 16 Pro"),
        # M2: ANE 15.8 TOPS (fp16 as A16), GPU 3.6 TFLOPS fp32, 100 GB/s unified memory, 8 GB base
        # (Apple M2 press release, June 2022). No per-model limit on macOS (ml-stable-diffusion: chunking is not
        # required on macOS).
        Device("mac-m2", "apple", "M2", "coreml", ("cpu", "gpu", "ne"), {"fp16": 15.8}, 100.0, None,
               deployment_target="macOS14", npu="ne", family="ane", gpu_tflops_fp32=3.6, memory_bytes=8 * GB,
               year=2022,
               title="Mac (M2)"),
        # Snapdragon 8 Gen 2 (SM8550): Hexagon v73, soc_model 43 (QNN SDK docs, HTP backend SoC table);
        # LPDDR5X-4200 on a 64-bit bus, 67 GB/s (Qualcomm product brief: LPDDR5x up to 4200 MHz).
        # TOPS: Qualcomm publishes none; 26 int8 is a press estimate, fp16 taken as half of it (an assumption).
        # 2 GB per context: protobuf limit of an
        # embedded EPContext (onnxruntime QNN EP docs: keep the context binary external above it).
        # 8 GB RAM: Samsung Galaxy S23 spec sheet.
        Device("snapdragon-8-gen-2", "qualcomm", "SM8550", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 26.0, "fp16": 13.0}, 67.0, 2 * GB, hexagon_arch="v73", soc_model=43, npu="htp",
               family="htp", memory_bytes=8 * GB, year=2022,
               title="Snapdragon 8 Gen 2"),
        # Snapdragon 8 Gen 3 (SM8650): Hexagon v75, soc_model 57 (QNN SDK docs); LPDDR5X-4800, 77 GB/s (Qualcomm
        # product brief); TOPS a press estimate (Qualcomm: NPU "up to 98% faster" than 8 Gen 2, unitless).
        # 8 GB RAM: Samsung Galaxy S24 spec sheet.
        Device("snapdragon-8-gen-3", "qualcomm", "SM8650", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 34.0, "fp16": 17.0}, 77.0, 2 * GB, hexagon_arch="v75", soc_model=57, npu="htp",
               family="htp", memory_bytes=8 * GB, year=2023,
               title="Snapdragon 8 Gen 3"),
        # Snapdragon 8 Elite (SM8750): Hexagon v79, soc_model 69 (QNN SDK docs); LPDDR5X-5300, 85 GB/s (Qualcomm
        # product brief); TOPS a press estimate (Qualcomm: NPU "45% faster" than 8 Gen 3, unitless).
        # 12 GB RAM: Samsung Galaxy S25 spec sheet.
        Device("snapdragon-8-elite", "qualcomm", "SM8750", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 45.0, "fp16": 22.5}, 85.0, 2 * GB, hexagon_arch="v79", soc_model=69, npu="htp",
               family="htp", memory_bytes=12 * GB, year=2024,
               title="Snapdragon 8 Elite"),
        # Snapdragon 8 Elite Gen 5 (SM8850): Hexagon v81, soc_model 87 (ExecuTorch Qualcomm backend's QcomChipset
        # table, backends/qualcomm/serialization/qc_schema.py); LPDDR5X-5300, 85 GB/s (Qualcomm product brief);
        # TOPS a press-level estimate (Qualcomm: NPU "37% faster" than 8 Elite, unitless). Latency on this chipset
        # comes from the cost model fitted on AI Hub's 8 Elite Gen 5 QRD rows, not from these peaks.
        # 12 GB RAM: assumption (the common flagship configuration; the QRD's RAM is not published).
        Device("snapdragon-8-elite-gen-5", "qualcomm", "SM8850", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 60.0, "fp16": 30.0}, 85.0, 2 * GB, hexagon_arch="v81", soc_model=87, npu="htp",
               family="htp", memory_bytes=12 * GB, year=2025,
               title="Snapdragon 8 Elite Gen 5"),
        # Snapdragon 7 Gen 4 (SM7750): Hexagon v73 (the HTP skel it loads; the QNN soc_model id is not in a public
        # table we could read: left unset, the QNN EP then prepares for the arch alone); LPDDR5X-4200, 67 GB/s
        # (Qualcomm product brief). TOPS an estimate (no public figure; AI Hub's rows put it at ~0.5x the 8 Gen 3).
        # 8 GB RAM: assumption (the common configuration of its phones).
        Device("snapdragon-7-gen-4", "qualcomm", "SM7750", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 17.0, "fp16": 8.5}, 67.0, 2 * GB, hexagon_arch="v73", soc_model=None, npu="htp",
               family="htp", memory_bytes=8 * GB, year=2025,
               title="Snapdragon 7 Gen 4"),
        # Snapdragon X Elite (X1E, SC8380XP): Hexagon NPU 45 TOPS int8 (Qualcomm's published figure, the one
        # Copilot+ PCs are rated by); Hexagon v73; LPDDR5X-8448, 135 GB/s (Qualcomm X Elite product page).
        # fp16 taken as half the int8 rate (assumption). 16 GB RAM: the smallest X Elite laptop configuration
        # (Copilot+ PCs require 16 GB). soc_model left unset (not in a public table we could read).
        Device("snapdragon-x-elite", "qualcomm", "X1E (SC8380XP)", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 45.0, "fp16": 22.5}, 135.0, 2 * GB, hexagon_arch="v73", soc_model=None, npu="htp",
               family="htp", memory_bytes=16 * GB, year=2024,
               title="Snapdragon X Elite"),
        # ---- CPU profiles (ONNX Runtime CPU provider, MLAS kernels) -------------------------------------------------
        # peak = sum over big cores of GHz x MACs/cycle. fp32: 128-bit NEON FMA pipes x 4 lanes (Cortex-X3: 4 pipes,
        # A715/A710/A78: 2; Arm Software Optimization Guides); fp16 (ARMv8.2 FP16): 2x fp32; int8: SDOT, 4x fp32
        # (16 int8 MACs per 128-bit instruction; MLAS's u8/s8 GEMM kernels use it). TOPS = 2 x MAC/s.
        # Cortex-A78 x4 @ 2.4 GHz (a 2022-23 mid-range phone, e.g. Exynos 1380, Dimensity 1080 runs A78 @ 2.6):
        # 4 x 2.4 x 8 = 76.8 GMAC/s fp32. Bandwidth: LPDDR4X-4266 x 64 bit = 34 GB/s. 6 GB RAM (the common configuration).
        Device("cpu-arm64", "arm", "ARMv8.2-A big cores (4x Cortex-A78 @ 2.4 GHz)", "onnx", ("cpu",),
               {"fp32": 0.154, "fp16": 0.307, "int8": 0.614}, 34.0, None, npu="cpu", family="cpu",
               memory_bytes=6 * GB, year=2022, cpu_arch="arm64", big_cores="4x Cortex-A78 2.4 GHz", title="CPU (arm64)"),
        # Samsung Galaxy A54 (Exynos 1380: 4x A78 @ 2.4 GHz + 4x A55; Samsung Exynos 1380 product page): no
        # Snapdragon HTP, so no QNN path; same big-core figures as cpu-arm64. LPDDR4X, 34 GB/s; 6 GB RAM (spec sheet).
        Device("galaxy-a54-cpu", "samsung", "Exynos 1380", "onnx", ("cpu",),
               {"fp32": 0.154, "fp16": 0.307, "int8": 0.614}, 34.0, None, npu="cpu", family="cpu",
               memory_bytes=6 * GB, year=2023, cpu_arch="arm64", big_cores="4x Cortex-A78 2.4 GHz",
               title="Galaxy A54 CPU"),
        # Google Pixel 8 (Tensor G3: 1x Cortex-X3 @ 2.91 GHz + 4x A715 @ 2.37 GHz + 4x A510; Google's TPU is not a
        # QNN target): 2.91 x 16 + 4 x 2.37 x 8 = 122 GMAC/s fp32. LPDDR5X, 8 GB (Google spec sheet); bandwidth
        # 4 x 16 bit at 8533 MT/s = 68 GB/s (press-reported memory type; Google does not publish the rate).
        Device("pixel-8-cpu", "google", "Tensor G3", "onnx", ("cpu",),
               {"fp32": 0.245, "fp16": 0.489, "int8": 0.978}, 68.0, None, npu="cpu", family="cpu",
               memory_bytes=8 * GB, year=2023, cpu_arch="arm64", big_cores="1x Cortex-X3 2.91 GHz + 4x A715 2.37 GHz",
               title="Pixel 8 CPU"),
        # Snapdragon 8 Gen 2's CPU (1x X3 @ 3.19 + 2x A715 @ 2.8 + 2x A710 @ 2.8 GHz; Qualcomm product brief), for
        # ORT CPU builds on the S23: 3.19 x 16 + 4 x 2.8 x 8 = 140.6 GMAC/s fp32; 67 GB/s and 8 GB as above.
        Device("snapdragon-8-gen-2-cpu", "qualcomm", "Kryo (SM8550)", "onnx", ("cpu",),
               {"fp32": 0.281, "fp16": 0.562, "int8": 1.125}, 67.0, None, npu="cpu", family="cpu",
               memory_bytes=8 * GB, year=2022, cpu_arch="arm64",
               big_cores="1x Cortex-X3 3.19 GHz + 2x A715 + 2x A710 2.8 GHz", title="Snapdragon 8 Gen 2 CPU"),
        # A generic x86-64 host at 2 threads (the build machine class): 2 cores @ 2.0 GHz x AVX2 (2 FMA ports x 8
        # fp32 lanes) = 64 GMAC/s fp32; int8 through AVX-VNNI / AVX-512 VNNI 4x (MLAS u8s8 kernels). No fp16
        # kernels on x86 in ORT's CPU provider. 2 channels DDR4-3200 = 51 GB/s. An assumption, not a product.
        Device("cpu", "x86", "x86-64 host (2 cores, AVX2 FMA)", "onnx", ("cpu",),
               {"fp32": 0.128, "int8": 0.512}, 51.2, None, npu="cpu", family="cpu", cpu_arch="x86_64",
               big_cores="2 cores 2.0 GHz", title="CPU (x86-64)"),
    ]
}

DEFAULT_DEVICE = {"coreml": "iphone-14-pro", "qnn": "snapdragon-8-gen-2", "onnx": None}


def name_key(text: str) -> str:
    """A device name as a lookup key: lower case, letters and digits only ("iPhone 14 Pro" -> "iphone14pro")."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def find_device(text: str) -> Device:
    """The profile `text` names: its slug, its title or its SoC, in any case and spacing."""
    key = name_key(text)
    by_name = [d for d in DEVICES.values() if key in (name_key(d.name), name_key(d.display_name))]
    if by_name:
        return by_name[0]
    soc = name_key(text.removesuffix(" Bionic").removesuffix(" bionic"))
    by_soc = [d for d in DEVICES.values() if soc and soc in (name_key(d.soc), name_key(d.soc.split()[0]))]
    if len(by_soc) == 1:
        return by_soc[0]
    if by_soc:
        names = ", ".join(f"'{d.display_name}'" for d in by_soc)
        raise BadInputError(f"device '{text}' is the SoC of {names}: name one of them with --device")
    raise BadInputError(f"unknown device '{text}': {_did_you_mean(key)}run `fusionc devices` to list them")


def _did_you_mean(key: str) -> str:
    """'did you mean ...? ' for the profiles whose name is closest to `key` (or that start with it), else ''."""
    import difflib

    names = {name_key(label): d.name for d in DEVICES.values() for label in (d.display_name, d.name)}
    close = [names[k] for k in names if key and k.startswith(key)] or \
        [names[k] for k in difflib.get_close_matches(key, list(names), n=3, cutoff=0.75)]
    close = list(dict.fromkeys(close))
    return f"did you mean {' or '.join(repr(n) for n in close)}? " if close else ""


def get_device(name: str | None, target: str) -> Device | None:
    """The profile called `name` (any name find_device accepts), or the target's default; a device of another
    target is bad input."""
    name = name or DEFAULT_DEVICE.get(target)
    if name is None:
        return None
    device = find_device(name)
    if target != "onnx" and device.target != target:
        raise BadInputError(f"device '{device.display_name}' is a {device.target} device, not a {target} one: "
                            f"pick another --device (see `fusionc devices`)")
    return device


def devices_table() -> list[dict[str, str]]:
    """Rows for `fusionc devices` (strings, ready to print)."""
    rows = []
    for d in DEVICES.values():
        rows.append({
            "device": d.display_name, "name": d.name, "soc": d.soc, "target": d.target,
            "units": ",".join(d.compute_units),
            "npu_tops": " ".join(f"{p}:{v:g}" for p, v in d.peak_tops.items()),
            "bandwidth": f"{d.memory_bandwidth_gbs:g} GB/s",
            "max_model": f"{d.max_model_bytes / GB:g} GB" if d.max_model_bytes else "-",
            "ram": f"{d.memory_bytes / GB:g} GB" if d.memory_bytes else "-",
            "hexagon": (f"{d.hexagon_arch} (soc_model {d.soc_model if d.soc_model is not None else 'not public'})"
                        if d.hexagon_arch else (d.big_cores or "-")),
            "os": d.deployment_target or "-",
        })
    return rows
