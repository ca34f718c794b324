"""Device profiles: what a target needs to know about a phone or Mac (`fusionc devices`).

Every figure carries its public source in a comment. Throughput figures feed the latency cost model
(fusionc.costmodel); `max_model_bytes` drives Core ML chunking; `hexagon_arch`/`soc_model` select the QNN
HTP backend's compile target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fusionc.errors import BadInputError


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


GB = 1 << 30

DEVICES: dict[str, Device] = {
    d.name: d
    for d in [
        # A16: ANE 17 TOPS (Apple iPhone 14 Pro keynote, 2022); LPDDR5 51.2 GB/s (6.4 Gbps x 64-bit).
        # ~1 GB per ANE model: apple/ml-stable-diffusion README (chunk the UNet on iOS).
        Device("iphone-14-pro", "apple", "A16 Bionic", "coreml", ("cpu", "gpu", "ne"), {"fp16": 17.0},
               51.2, 1 * GB, deployment_target="iOS16"),
        # A17 Pro: ANE 35 TOPS (Apple iPhone 15 Pro keynote, 2023); LPDDR5 51.2 GB/s.
        Device("iphone-15-pro", "apple", "A17 Pro", "coreml", ("cpu", "gpu", "ne"), {"fp16": 35.0},
               51.2, 1 * GB, deployment_target="iOS17"),
        # A18 Pro: ANE 35 TOPS (Apple iPhone 16 Pro keynote, 2024); LPDDR5X 60 GB/s.
        Device("iphone-16-pro", "apple", "A18 Pro", "coreml", ("cpu", "gpu", "ne"), {"fp16": 35.0},
               60.0, 1 * GB, deployment_target="iOS18"),
        # M2: ANE 15.8 TOPS, 100 GB/s unified memory (Apple M2 press release, June 2022).
        Device("mac-m2", "apple", "M2", "coreml", ("cpu", "gpu", "ne"), {"fp16": 15.8}, 100.0, None,
               deployment_target="macOS14"),
        # Snapdragon 8 Gen 2: Hexagon v73, soc_model 43 (QNN SDK docs, HTP backend soc table);
        # LPDDR5X 4200 MHz, 67 GB/s (Qualcomm product brief).
        Device("snapdragon-8-gen-2", "qualcomm", "SM8550", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 26.0, "fp16": 13.0}, 67.0, 2 * GB, hexagon_arch="v73", soc_model=43),
        # Snapdragon 8 Gen 3: Hexagon v75, soc_model 57 (QNN SDK docs); LPDDR5X 4800 MHz, 77 GB/s.
        Device("snapdragon-8-gen-3", "qualcomm", "SM8650", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 34.0, "fp16": 17.0}, 77.0, 2 * GB, hexagon_arch="v75", soc_model=57),
        # Snapdragon 8 Elite: Hexagon v79, soc_model 69 (QNN SDK docs); LPDDR5X 5300 MHz, 85 GB/s.
        Device("snapdragon-8-elite", "qualcomm", "SM8750", "qnn", ("cpu", "gpu", "htp"),
               {"int8": 45.0, "fp16": 22.5}, 85.0, 2 * GB, hexagon_arch="v79", soc_model=69),
    ]
}

DEFAULT_DEVICE = {"coreml": "iphone-14-pro", "qnn": "snapdragon-8-gen-2", "onnx": None}


def get_device(name: str | None, target: str) -> Device | None:
    """The profile called `name`, or the target's default; a device of another target is bad input."""
    name = name or DEFAULT_DEVICE.get(target)
    if name is None:
        return None
    if name not in DEVICES:
        raise BadInputError(f"unknown device '{name}': run `fusionc devices` to list them")
    device = DEVICES[name]
    if target != "onnx" and device.target != target:
        raise BadInputError(f"device '{name}' is a {device.target} device, not a {target} one: pick another --device")
    return device
