"""``python -m sparseags.prior.convert_ckpt SRC.ckpt DST.safetensors [--trust-pickle]``.

Extracts what the prior uses from a 6-DoF Zero123 checkpoint (the SD-1.x attention blocks under their
ldm names and ``cc_projection``) into a small ``.safetensors`` file that loads without unpickling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .ckpt_6dof import extract_used_weights, read_state_dict, save_safetensors_atomic
from .weights import PriorWeightsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sparseags.prior.convert_ckpt",
        description="Extract the attention blocks and cc_projection of a 6-DoF Zero123 .ckpt into a .safetensors file.",
    )
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary pickled objects in SRC (only for files from a trusted source)",
    )
    args = parser.parse_args(argv)
    try:
        used = extract_used_weights(read_state_dict(args.src, trust_pickle=args.trust_pickle))
    except PriorWeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    save_safetensors_atomic(used, args.dst)
    print(f"wrote {len(used)} tensors to {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
