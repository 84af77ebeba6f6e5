"""Bytes the Space keeps on its disk for one ``/protect`` request, and in which files.

Starts the real Space (``app.main()``: bundled checkpoint, offline) in this process, uploads one
square image through gradio_client, and lists every file the request added below the workspace and
Gradio's upload cache (the two folders a visitor's files can land in)::

    python -m benchmarks.space_disk [--size 512] [--image PATH] [--json benchmarks/results/space_disk.json]

The upload is a centre crop of ``--image`` (default: the first dev-set image in ../shared) resized
to ``--size``² and saved as JPEG (quality 90), as a phone photo would arrive.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``roots``: path -> (size in bytes, inode); hard links share an inode and their bytes."""
    files: dict[str, tuple[int, int]] = {}
    for root in roots:
        for path in Path(root).rglob("*") if Path(root).exists() else ():
            if path.is_file():
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_ino)
    return files


def make_upload(source: Path, size: int, folder: Path) -> Path:
    with Image.open(source) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        crop = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    path = folder / f"upload_{size}.jpg"
    crop.save(path, quality=90)
    return path


def default_image() -> Path:
    from fastprotect import environment

    shared = Path(environment.get("FASTPROTECT_SHARED") or Path(__file__).resolve().parents[2] / "shared")
    return sorted((shared / "data" / "images" / "object").glob("*.jpg"))[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    import app
    from gradio.utils import get_upload_folder
    from gradio_client import Client, handle_file

    demo, limits = app.main()
    app.launch(demo, limits, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    workspace = demo.space_context.workspace.root
    cache = Path(get_upload_folder())
    with tempfile.TemporaryDirectory() as scratch:
        upload = make_upload(args.image or default_image(), args.size, Path(scratch))
        client = Client(demo.local_url, verbose=False, download_files=str(Path(scratch) / "client"))
        before = snapshot(workspace, cache)
        client.predict(handle_file(str(upload)), 8, "auto", True, 0, api_name="/protect")
        after = snapshot(workspace, cache)
        upload_bytes = upload.stat().st_size
    added = {path: entry for path, entry in after.items() if before.get(path) != entry}
    total = sum(dict((inode, size) for size, inode in added.values()).values())  # each inode once: a hard link costs no bytes
    print(f"upload: {args.size}² JPEG, {upload_bytes:,} bytes")
    for path, (size, inode) in sorted(added.items(), key=lambda item: (-item[1][0], item[0])):
        where = "workspace" if Path(path).is_relative_to(workspace) else "gradio cache"
        print(f"{size:>12,}  inode {inode:<10} {where:<12} {Path(path).relative_to(workspace if where == 'workspace' else cache)}")
    files = len({inode for _, inode in added.values()})
    print(f"stored for this request: {total:,} bytes in {files} files ({len(added)} names) = {total / upload_bytes:.1f}× the upload")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "upload_bytes": upload_bytes, "stored_bytes": total, "files": files, "names": len(added),
                                         "ratio": round(total / upload_bytes, 2)}, indent=2) + "\n")
    demo.close()
    demo.space_context.workspace.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
