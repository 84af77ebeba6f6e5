"""Write the weights the bundled checkpoint's fast path needs into its folder, from local copies.

    python -m scripts.bundle_weights --taef2 FOLDER --lpips FILE [--checkpoint checkpoints/taef2-mixture]

FOLDER holds the original ``taef2_encoder.pth`` + ``taef2_decoder.pth`` (madebyollin/taesd, MIT);
FILE is the LPIPS AlexNet backbone with its heads (torchvision-style keys, ``features.{i}`` +
``lin{k}.model.1.weight``). Writes ``taef2.safetensors`` in the Hub's diffusers single-file layout
(the same file ``madebyollin/taef2`` serves, so one loader reads both) and
``alexnet_lpips_features.safetensors``, tensors unchanged (TAEF2 stays float16).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file, save_file

from fastprotect.encoders import read_state_dict
from fastprotect.taesd import join_single_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bundle_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--taef2", type=Path, required=True, help="folder with taef2_encoder.pth and taef2_decoder.pth")
    parser.add_argument("--lpips", type=Path, required=True, help="alexnet_lpips_features.safetensors")
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taef2-mixture"))
    args = parser.parse_args(argv)
    encoder = read_state_dict(args.taef2 / "taef2_encoder.pth")
    decoder = read_state_dict(args.taef2 / "taef2_decoder.pth")
    state = {key: tensor.contiguous() for key, tensor in join_single_file(encoder, decoder).items()}
    save_file(state, str(args.checkpoint / "taef2.safetensors"), metadata={"format": "pt", "source": "madebyollin/taesd taef2 (MIT)"})
    lpips = load_file(str(args.lpips))
    save_file(lpips, str(args.checkpoint / "alexnet_lpips_features.safetensors"), metadata={"format": "pt", "source": "LPIPS v0.1 AlexNet (torchvision BSD-3, LPIPS heads BSD-2)"})
    print(f"wrote {args.checkpoint / 'taef2.safetensors'} and {args.checkpoint / 'alexnet_lpips_features.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
