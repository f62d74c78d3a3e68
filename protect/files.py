"""Find images in a folder, read their pixels and write protected copies.

This is the file edge of the project: pixels are uint8 arrays (H, W, C) here
and float only inside the engine. Every write is atomic: the bytes go to a
hidden temporary file in the destination folder, are flushed to disk, and then
replace the final name with `os.replace`, so no reader ever sees a partial file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

Image.init()
# Pillow's own guard (a warning, then an error at twice its limit) is replaced
# by the explicit check in read_image, so --max-pixels can move the limit
# either way without changing a global between calls.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's error threshold: 2 x 89,478,485

# Extensions that name images Pillow cannot read without a plugin. They are
# reported as failed with a reason instead of being ignored silently.
_UNREADABLE_IMAGE_EXTENSIONS = {".heic", ".heif", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf"}

# Output settings per format. JPEG: quality 95 with 4:4:4 chroma (no colour
# subsampling) keeps most of δ while files stay a normal size. WebP is written
# lossless, so δ survives exactly; a lossy WebP source therefore grows.
_SAVE_OPTIONS: dict[str, dict] = {
    "PNG": {"optimize": False},
    "JPEG": {"quality": 95, "subsampling": 0},
    "WEBP": {"lossless": True, "quality": 100},
    "TIFF": {},
    "BMP": {},
    "PPM": {},
    "TGA": {},
}
LOSSY_FORMATS = {"JPEG"}
TEMPORARY_SUFFIX = ".protect-tmp"
JPEG_QUALITY = _SAVE_OPTIONS["JPEG"]["quality"]

# Written into PNG text chunks, JPEG comments, WebP XMP and the TIFF image
# description, so a second run can tell the tool's own output from an
# original. BMP, PPM and TGA have no metadata to carry it.
MARKER = "protect:mi-ue"
_MARKER_XMP = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><!-- {MARKER} --></x:xmpmeta>'.encode()
_TIFF_DESCRIPTION = 270  # TIFF tag ImageDescription
_GPS_IFD = 0x8825

# Modes whose colour channels are 8-bit; anything else is skipped with a reason.
_SUPPORTED_MODES = {"RGB", "RGBA", "L", "LA", "P"}


class ImageReadError(Exception):
    """An image file could not be read; the message gives the reason."""

    reason = "unreadable"  # short category for summaries


class EmptyFile(ImageReadError):
    reason = "empty file"


class FormatMismatch(ImageReadError):
    reason = "extension does not match format"


class UnsupportedImage(Exception):
    """An image was read but cannot be protected faithfully; the message gives the reason."""

    reason = "unsupported"


class AlreadyProtected(UnsupportedImage):
    reason = "already protected"


@dataclass(frozen=True)
class ImageFile:
    """One image found under the source folder."""

    path: Path  # the file to read
    relative: Path  # path below the source folder, kept for the output
    label: str  # first-level subfolder name, "" for files directly in the folder


@dataclass
class Discovery:
    """Images found under a folder, and the files passed over."""

    images: list[ImageFile] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def _is_image_name(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in Image.registered_extensions() or suffix in _UNREADABLE_IMAGE_EXTENSIONS


def _inside(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def discover(source: Path, exclude: Path | None = None) -> Discovery:
    """List the images under `source` in a stable (sorted) order.

    Hidden files and folders (names starting with ".") and files with
    non-image extensions are recorded in `ignored`. Symbolic links are
    followed only when their target lies inside `source`. Other links are
    ignored, so a link cannot pull in, or in place overwrite, files elsewhere.
    `exclude` is a folder to skip entirely, such as an output folder that
    lies inside `source`.
    """
    found = Discovery()
    root = source.resolve()
    excluded = exclude.resolve() if exclude is not None else None
    visited = {root}
    for folder, dirs, names in os.walk(source, followlinks=True):
        here = Path(folder)
        kept = []
        for d in sorted(dirs):
            path = here / d
            real = path.resolve()
            if d.startswith(".") or real == excluded or real in visited:
                continue  # hidden, the output folder, or a link back to a visited folder
            if path.is_symlink() and not _inside(path, root):
                found.ignored.append(path)
                continue
            visited.add(real)
            kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or not _is_image_name(name):
                found.ignored.append(path)
                continue
            if path.is_symlink() and not _inside(path, root):
                found.ignored.append(path)
                continue
            relative = path.relative_to(source)
            label = relative.parts[0] if len(relative.parts) > 1 else ""
            found.images.append(ImageFile(path, relative, label))
    return found


@dataclass
class Picture:
    """Decoded pixels of one image and what is needed to write it back.

    rgb: (H, W, 3) uint8 colour channels (gray is repeated three times);
    alpha: (H, W) uint8 or None, written back untouched.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    mode: str  # the mode to write: RGB, RGBA, L or LA
    format: str  # Pillow format name, such as "PNG" or "JPEG"
    exif: bytes | None
    icc_profile: bytes | None
    marked: bool = False  # the file carries MARKER: an output of this tool

    @property
    def gray(self) -> bool:
        return self.mode in ("L", "LA")


class ImageTooLarge(Exception):
    """An image declares more pixels than the limit; it may be a decompression bomb."""

    reason = "too many pixels"


def _has_marker(im: Image.Image) -> bool:
    """Return whether an opened image carries MARKER in any of the places encode() writes it."""
    comment = im.info.get("comment", b"")
    xmp = im.info.get("xmp", b"")
    description = im.tag_v2.get(_TIFF_DESCRIPTION, "") if hasattr(im, "tag_v2") else ""
    return (
        im.info.get(MARKER) is not None
        or (isinstance(comment, bytes) and comment.startswith(MARKER.encode()))
        or (isinstance(xmp, bytes) and MARKER.encode() in xmp)
        or (isinstance(description, str) and description.startswith(MARKER))
    )


def is_output(path: Path) -> bool:
    """Return whether the file at `path` is an image this tool wrote (it carries MARKER).

    JPEG, WebP and TIFF keep the marker in their headers, which opening
    reads. A PNG may keep its text after the pixels, so a PNG without it in
    the header is decoded once to be sure. A file that is not a readable
    image is not an output.
    """
    try:
        with Image.open(path) as im:
            if _has_marker(im):
                return True
            if im.format == "PNG":
                im.load()
                return _has_marker(im)
            return False
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode `path`, keeping the stored pixel orientation and the metadata.

    Pixels are used as stored, and the EXIF block (orientation included) is
    carried over unchanged, so the output displays the same way up as the
    source. An image with more than `max_pixels` pixels raises ImageTooLarge
    before it is decoded. Raises ImageReadError or UnsupportedImage with the reason.
    """
    limit = max_pixels
    try:
        with Image.open(path) as im:
            if limit and im.width * im.height > limit:
                raise ImageTooLarge(
                    f"image is {im.width}x{im.height} = {im.width * im.height:,} pixels, more than the "
                    f"limit of {limit:,} (a possible decompression bomb); pass --max-pixels to raise it"
                )
            im.load()
            fmt = im.format or ""
            exif = im.info.get("exif")
            icc = im.info.get("icc_profile")
            marked = _has_marker(im)
            frames = getattr(im, "n_frames", 1)
            if fmt == "MPO":
                # Phone cameras write JPEG with extra MPO frames (previews, depth
                # maps). The first frame is the photo, written back as plain JPEG.
                fmt, frames = "JPEG", 1
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            pixels = np.array(im)  # a writable copy
    except (OSError, ValueError, SyntaxError) as error:
        if os.path.getsize(path) == 0:
            raise EmptyFile("the file is empty (0 bytes)") from error
        raise ImageReadError(f"not a readable image: {error}") from error

    named = Image.registered_extensions().get(os.path.splitext(path.name)[1].lower())
    if named is not None and named != fmt and {named, fmt} != {"JPEG", "MPO"}:
        raise FormatMismatch(
            f"the file contains {fmt} data but its extension names {named}; rename it to match its format"
        )
    if fmt not in _SAVE_OPTIONS:
        raise UnsupportedImage(
            f"{fmt or 'this'} format cannot be written back with the perturbation intact; "
            "convert the image to PNG or JPEG first"
        )
    if frames > 1:
        raise UnsupportedImage(f"animated image ({frames} frames); only still images are protected")
    if mode not in _SUPPORTED_MODES:
        raise UnsupportedImage(
            f"pixel mode {mode} is not supported (RGB, RGBA, L, LA and palette images are); "
            "convert it to 8-bit RGB first"
        )

    alpha = None
    if mode in ("RGBA", "LA"):
        alpha = pixels[..., -1].copy()
        pixels = pixels[..., :-1]
    if mode in ("L", "LA"):
        pixels = np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
    return Picture(np.ascontiguousarray(pixels), alpha, mode, fmt, exif, icc, marked)


def to_pil(picture: Picture, rgb: np.ndarray) -> Image.Image:
    """Build a Pillow image in the picture's mode from (H, W, 3) uint8 colour."""
    if picture.gray:
        # All three channels of a gray source carry one value, so one is enough.
        channels = [rgb[..., 0]]
    else:
        channels = [rgb[..., i] for i in range(3)]
    if picture.alpha is not None:
        channels.append(picture.alpha)
    stacked = np.stack(channels, axis=-1)
    if stacked.shape[-1] == 1:
        return Image.fromarray(stacked[..., 0], mode="L")
    return Image.fromarray(stacked, mode=picture.mode)


def without_gps(exif: bytes) -> bytes:
    """Return an EXIF block with its GPS (location) directory removed."""
    parsed = Image.Exif()
    parsed.load(exif)
    if _GPS_IFD in parsed:
        del parsed[_GPS_IFD]
    return parsed.tobytes()


def encode(image: Image.Image, picture: Picture, handle, metadata: str = "keep") -> None:
    """Write `image` to the open binary `handle` in the picture's format.

    metadata: "keep" copies EXIF and ICC, "strip-gps" drops EXIF's location,
    "strip" writes neither. PNG, JPEG, WebP and TIFF outputs also carry MARKER.
    """
    options = dict(_SAVE_OPTIONS[picture.format])
    if picture.exif and metadata != "strip":
        options["exif"] = without_gps(picture.exif) if metadata == "strip-gps" else picture.exif
    if picture.icc_profile and metadata != "strip":
        options["icc_profile"] = picture.icc_profile
    if picture.format == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text(MARKER, "1")
        options["pnginfo"] = text
    elif picture.format == "JPEG":
        options["comment"] = MARKER.encode()
    elif picture.format == "WEBP":
        options["xmp"] = _MARKER_XMP
    elif picture.format == "TIFF":
        options["tiffinfo"] = {_TIFF_DESCRIPTION: MARKER}
    image.save(handle, format=picture.format, **options)


def _default_mode() -> int:
    # mkstemp creates files readable by the owner only; a published image
    # should get the permissions any new file gets (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_temporary(destination: Path, write, mode: int | None = None) -> Path:
    """Call write(handle) on a new hidden file beside `destination`; return its path.

    The file gets permission bits `mode`, or those of a new file when None.
    The data is flushed to disk before returning. On any error the temporary
    file is removed and the error propagates; `destination` is never touched.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=TEMPORARY_SUFFIX, dir=destination.parent
    )
    try:
        os.chmod(temporary, _default_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary)


def atomic_write(destination: Path, write) -> None:
    """Write `destination` through a temporary file and a rename.

    Readers see either the old file or the complete new one, never a part.
    """
    temporary = write_temporary(destination, write)
    try:
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_rgb(path: Path) -> np.ndarray:
    """Decode `path` to (H, W, 3) uint8, repeating gray and dropping alpha."""
    return read_image(path).rgb
