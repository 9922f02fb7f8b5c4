"""``fetalgan data fetch`` against a fake Zenodo records API on 127.0.0.1, serving small
fabricated zips in HC18's and FETAL_PLANES_DB's layouts; the pinned table is replaced by their
sizes and md5s. Nothing real is downloaded: what the real API answers is not exercised here."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from fetalgan.cli import main
from fetalgan.data import fetch as fetch_module
from fetalgan.data.datasets import list_hc18, list_planes
from fetalgan.data.fetch import API_ENV, DATASETS, LOCK_FILE, RecordFile, RootInUse, fetch

PLANES_HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "
PLANES_ROWS = [
    "Patient00001_Plane1_1_of_2;1;Other;Not A Brain;Op. 1;Voluson E6;1",
    "Patient00002_Plane3_1_of_3;2;Fetal brain;Trans-cerebellum;Op. 2;Aloka;0",
    "Patient00003_Plane2_1_of_1;3;Fetal abdomen;Not A Brain;Other;Voluson S10;1",
]


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (6, 4), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _training_members(folder: str = "training_set/") -> dict[str, bytes]:
    """3 images (000_HC, 001_HC, 002_2HC: a subject's second image), each with its mask."""
    members = {}
    for i, stem in enumerate(("000_HC", "001_HC", "002_2HC")):
        members[f"{folder}{stem}.png"] = _png(40 + 30 * i)
        members[f"{folder}{stem}_Annotation.png"] = _png(255)
    return members


def _hc18_files(training: dict[str, bytes] | None = None) -> dict[str, bytes]:
    return {
        "training_set.zip": _zip(training or _training_members()),
        "test_set.zip": _zip({"test_set/900_HC.png": _png(9), "test_set/901_HC.png": _png(19)}),
        "training_set_pixel_size_and_HC.csv": b"filename,pixel size(mm),head circumference "
        b"(mm)\n000_HC.png,0.07,44.3\n001_HC.png,0.09,56.8\n002_2HC.png,0.08,68.8\n",
    }


def _use_hc18(monkeypatch, files: dict[str, bytes], **counts: int) -> None:
    """Pin ``files`` (name -> bytes) as HC18's record, expecting 3 images, 3 masks, 2 tests."""
    folders = {"training_set.zip": "training_set", "test_set.zip": "test_set"}
    pinned = tuple(
        RecordFile(name, len(data), _md5(data), folder=folders.get(name))
        for name, data in files.items()
    )
    expected = {"training_images": 3, "training_masks": 3, "test_images": 2} | counts
    dataset = dataclasses.replace(DATASETS["hc18"], files=pinned, counts=expected)
    monkeypatch.setitem(DATASETS, "hc18", dataset)


def _planes_zip(wrapper: str = "", rows: list[str] = PLANES_ROWS) -> bytes:
    csv_text = "\r\n".join([PLANES_HEADER, *rows]) + "\r\n"  # CRLF, as the real file
    members = {f"{wrapper}FETAL_PLANES_DB_data.csv": csv_text.encode()}
    for i, row in enumerate(PLANES_ROWS):
        members[f"{wrapper}Images/{row.split(';')[0]}.png"] = _png(30 * i)
    members["__MACOSX/._FETAL_PLANES_DB_data.csv"] = b"resource fork"
    return _zip(members)


def _use_planes(monkeypatch, data: bytes) -> None:
    pinned = dataclasses.replace(DATASETS["planes"].files[0], size=len(data), md5=_md5(data))
    dataset = dataclasses.replace(DATASETS["planes"], files=(pinned,), counts={"rows": 3})
    monkeypatch.setitem(DATASETS, "planes", dataset)


class FakeZenodo:
    """``GET /api/records/<id>`` lists ``files`` as Zenodo's records API does; ``GET
    /files/<name>`` serves them, honouring ``Range: bytes=N-`` unless ``honour_range`` is off.

    ``served`` replaces the bytes sent for a name (a corrupted transfer), ``listed`` overrides
    fields of a listing entry, ``truncate`` drops the connection after so many bytes of a name,
    ``hold`` keeps a name's transfer waiting (``holding`` set) until its event is set;
    ``requests`` records (path, Range header) and ``sent`` (path, bytes sent) of each request."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, bytes]] = {}
        self.served: dict[str, bytes] = {}
        self.listed: dict[str, dict] = {}
        self.truncate: dict[str, int] = {}
        self.honour_range = True
        self.hold: dict[str, threading.Event] = {}  # a file's transfer waits for its event
        self.holding = threading.Event()  # set when a held transfer has started waiting
        self.requests: list[tuple[str, str | None]] = []
        self.sent: list[tuple[str, int]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.zenodo = self
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.api = f"{self.base}/api"

    def publish(self, kind: str, files: dict[str, bytes]) -> None:
        self.records[DATASETS[kind].record] = files

    def file_requests(self, name: str) -> list[str | None]:
        """The Range header of each request for file ``name`` (None: no Range)."""
        return [r for path, r in self.requests if path == f"/files/{name}"]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        zenodo: FakeZenodo = self.server.zenodo
        zenodo.requests.append((self.path, self.headers.get("Range")))
        record = re.fullmatch(r"/api/records/(\d+)", self.path)
        if record and int(record[1]) in zenodo.records:
            entries = [
                {
                    "key": name,
                    "size": len(data),
                    "checksum": f"md5:{_md5(data)}",
                    "links": {"self": f"{zenodo.base}/files/{name}"},
                }
                | zenodo.listed.get(name, {})
                for name, data in zenodo.records[int(record[1])].items()
            ]
            self._send(200, json.dumps({"id": int(record[1]), "files": entries}).encode())
            return
        published = {k: v for files in zenodo.records.values() for k, v in files.items()}
        name = self.path.removeprefix("/files/")
        if not self.path.startswith("/files/") or name not in published:
            self._send(404, b"not found")
            return
        data = zenodo.served.get(name, published[name])
        if name in zenodo.hold:  # a slow transfer: the fetch is busy until the test lets go
            zenodo.holding.set()
            zenodo.hold[name].wait(30)
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and zenodo.honour_range:
            start = int(wanted[1])
            content_range = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206, data[start:], {"Content-Range": content_range}, name)
        else:
            self._send(200, data, {}, name)

    def _send(self, status: int, body: bytes, headers: dict | None = None, name: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if name in self.server.zenodo.truncate:  # the connection drops part-way
            body = body[: self.server.zenodo.truncate.pop(name)]
        self.wfile.write(body)
        self.server.zenodo.sent.append((self.path, len(body)))

    def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's signature)
        pass


@pytest.fixture
def zenodo(monkeypatch):
    monkeypatch.delenv(API_ENV, raising=False)
    fake = FakeZenodo()
    thread = threading.Thread(target=fake.server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join()


@pytest.fixture
def hc18(monkeypatch, zenodo) -> dict[str, bytes]:
    """HC18's files, pinned and published on the fake Zenodo."""
    files = _hc18_files()
    _use_hc18(monkeypatch, files)
    zenodo.publish("hc18", files)
    return files


def _closed_api() -> str:
    """An API address where nothing listens: the connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def _copies(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """The files as a user copies them in by hand, for --from."""
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def _untouched(root: Path) -> bool:
    """Nothing of the dataset in ``root``: no unpacked entry, no staging folder, no record."""
    return not root.exists() or all(p.name == "downloads" for p in root.iterdir())


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def test_fetch_hc18_lays_out_what_the_datasets_read(tmp_path, zenodo, hc18):
    root = tmp_path / "hc18"
    fetched = fetch("hc18", root, api=zenodo.api)

    assert not fetched.already_there
    assert [p.name for p in list_hc18(root)] == ["000_HC.png", "001_HC.png", "002_2HC.png"]
    assert [p.name for p in list_hc18(root / "test_set")] == ["900_HC.png", "901_HC.png"]
    assert (root / "training_set_pixel_size_and_HC.csv").read_bytes() == hc18[
        "training_set_pixel_size_and_HC.csv"
    ]
    assert sorted(p.name for p in root.iterdir()) == [
        "dataset.json",
        "test_set",
        "training_set",
        "training_set_pixel_size_and_HC.csv",
    ]  # the zips and the downloads folder are gone, no staging folder is left
    record = json.loads((root / "dataset.json").read_text())
    assert record == fetched.record
    assert record["source"] == {
        "zenodo_record": 1327317,
        "doi": "10.5281/zenodo.1327317",
        "url": "https://zenodo.org/records/1327317",
    }
    assert record["files"] == [
        {"name": name, "size": len(data), "md5": _md5(data)} for name, data in hc18.items()
    ]
    assert record["counts"] == {"training_images": 3, "training_masks": 3, "test_images": 2}
    assert record["licence"].startswith("CC BY 4.0")
    assert "Automated measurement of fetal head circumference" in record["citation"]
    assert record["fetched"].endswith("+00:00")
    assert zenodo.file_requests("training_set.zip") == [None]


def test_fetch_planes_drops_the_wrapping_folder(tmp_path, zenodo, monkeypatch):
    data = _planes_zip(wrapper="FETAL_PLANES_ZENODO/")
    _use_planes(monkeypatch, data)
    zenodo.publish("planes", {"FETAL_PLANES_ZENODO.zip": data})
    monkeypatch.setenv(API_ENV, zenodo.api)  # no api argument: the environment names it
    root = tmp_path / "planes"

    fetched = fetch("planes", root)

    assert len(list_planes(root)) == 3
    assert [p.name for p in list_planes(root, plane="Fetal brain")] == [
        "Patient00002_Plane3_1_of_3.png"
    ]
    assert sorted(p.name for p in root.iterdir()) == [
        "FETAL_PLANES_DB_data.csv",
        "Images",
        "dataset.json",
    ]  # no FETAL_PLANES_ZENODO/ wrapper, no __MACOSX/
    assert fetched.record["counts"] == {"rows": 3, "images": 3}
    assert fetched.record["source"]["doi"] == "10.5281/zenodo.3904280"
    assert "Scientific Reports 10: 10200" in fetched.record["citation"]


def test_planes_image_listed_but_missing_is_refused(tmp_path, zenodo, monkeypatch):
    rows = [*PLANES_ROWS, "Patient00009_Plane4_1_of_1;9;Fetal femur;Not A Brain;Op. 1;Aloka;1"]
    data = _planes_zip(rows=rows)
    _use_planes(monkeypatch, data)
    zenodo.publish("planes", {"FETAL_PLANES_ZENODO.zip": data})

    with pytest.raises(ValueError, match=r"Images/Patient00009_Plane4_1_of_1.png: listed in"):
        fetch("planes", tmp_path / "planes", api=zenodo.api)
    assert _untouched(tmp_path / "planes")


def test_resume_asks_for_the_rest_only(tmp_path, zenodo, hc18):
    root = tmp_path / "hc18"
    (root / "downloads").mkdir(parents=True)
    whole = hc18["training_set.zip"]
    half = len(whole) // 2
    (root / "downloads" / "training_set.zip.part").write_bytes(whole[:half])

    fetch("hc18", root, api=zenodo.api)

    assert zenodo.file_requests("training_set.zip") == [f"bytes={half}-"]
    assert ("/files/training_set.zip", len(whole) - half) in zenodo.sent
    assert len(list_hc18(root)) == 3


def test_server_ignoring_range_starts_over(tmp_path, zenodo, hc18):
    zenodo.honour_range = False
    root = tmp_path / "hc18"
    (root / "downloads").mkdir(parents=True)
    whole = hc18["training_set.zip"]
    # garbage: appending the whole file to it would fail the md5, so only a restart passes
    (root / "downloads" / "training_set.zip.part").write_bytes(b"x" * (len(whole) // 2))

    fetch("hc18", root, api=zenodo.api)

    assert zenodo.file_requests("training_set.zip") == [f"bytes={len(whole) // 2}-"]
    assert len(list_hc18(root)) == 3


def test_dropped_connection_keeps_the_part_and_resumes(tmp_path, zenodo, hc18):
    root = tmp_path / "hc18"
    zenodo.truncate["test_set.zip"] = 100

    with pytest.raises(ValueError, match=r"test_set.zip stopped at 100 of .* again to resume"):
        fetch("hc18", root, api=zenodo.api)
    assert (root / "downloads" / "test_set.zip.part").stat().st_size == 100

    fetch("hc18", root, api=zenodo.api, keep_zips=True)
    assert zenodo.file_requests("test_set.zip") == [None, "bytes=100-"]
    assert zenodo.file_requests("training_set.zip") == [None]  # verified once, kept, reused
    assert sorted(p.name for p in (root / "downloads").iterdir()) == sorted(hc18)  # kept


def test_checksum_mismatch_names_the_file_and_removes_the_download(tmp_path, zenodo, hc18):
    root = tmp_path / "hc18"
    corrupt = bytearray(hc18["test_set.zip"])
    corrupt[len(corrupt) // 2] ^= 0xFF  # same size, one byte flipped in transit
    zenodo.served["test_set.zip"] = bytes(corrupt)

    with pytest.raises(ValueError) as caught:
        fetch("hc18", root, api=zenodo.api)
    message = str(caught.value)
    assert "download of test_set.zip" in message
    assert f"md5 {_md5(bytes(corrupt))}" in message
    assert f"expected md5 {_md5(hc18['test_set.zip'])}" in message
    assert "the download was removed" in message
    assert not (root / "downloads" / "test_set.zip.part").exists()
    assert _untouched(root)

    del zenodo.served["test_set.zip"]  # the next run downloads it afresh and succeeds
    fetch("hc18", root, api=zenodo.api)
    assert zenodo.file_requests("test_set.zip") == [None, None]
    assert len(list_hc18(root)) == 3


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("checksum", "md5:" + "0" * 32, "Zenodo lists checksum md5:" + "0" * 32),
        ("size", 12345, "Zenodo lists size 12345"),
    ],
)
def test_record_that_disagrees_with_the_pinned_table_is_refused(
    tmp_path, zenodo, hc18, field, value, shown
):
    zenodo.listed["training_set.zip"] = {field: value}
    pinned = DATASETS["hc18"].files[0]

    with pytest.raises(ValueError, match="Zenodo record 1327317 changed") as caught:
        fetch("hc18", tmp_path / "hc18", api=zenodo.api)
    assert shown in str(caught.value)
    pinned_value = f"md5:{pinned.md5}" if field == "checksum" else str(pinned.size)
    assert f"pinned table {pinned_value}" in str(caught.value)
    assert not [path for path, _ in zenodo.requests if path.startswith("/files/")]


def test_offline_says_how_to_copy_the_files_in(tmp_path, hc18):
    with pytest.raises(ValueError, match="cannot reach") as caught:
        fetch("hc18", tmp_path / "hc18", api=_closed_api())
    assert "https://zenodo.org/records/1327317" in str(caught.value)
    assert "--from training_set.zip --from test_set.zip" in str(caught.value)


def test_counts_differing_from_the_table_leave_nothing(tmp_path, zenodo, monkeypatch):
    files = _hc18_files()
    _use_hc18(monkeypatch, files, training_images=4)
    zenodo.publish("hc18", files)

    with pytest.raises(ValueError, match=r"found 3 training images .*, expected 4"):
        fetch("hc18", tmp_path / "hc18", api=zenodo.api)
    assert _untouched(tmp_path / "hc18")


def test_a_hand_made_copy_in_the_way_is_not_overwritten(tmp_path, zenodo, hc18):
    root = tmp_path / "hc18"
    (root / "training_set").mkdir(parents=True)

    with pytest.raises(ValueError, match=r"training_set: already exists, but .*dataset.json"):
        fetch("hc18", root, api=zenodo.api)
    assert zenodo.requests == []


# --------------------------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------------------------


def _evil_zip(tmp_path: Path, how: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in _training_members().items():
            zf.writestr(name, data)
        if how == "symlink":
            link = zipfile.ZipInfo("training_set/003_HC.png")
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, "../../evil.png")
        else:
            target = {
                "dotdot": "../evil.png",
                "inner dotdot": "training_set/../../evil.png",
                "absolute": f"{tmp_path}/evil.png",
            }[how]
            zf.writestr(target, _png(1))
    return buffer.getvalue()


@pytest.mark.parametrize("how", ["dotdot", "inner dotdot", "absolute", "symlink"])
def test_member_escaping_the_root_is_refused(tmp_path, monkeypatch, how):
    files = _hc18_files() | {"training_set.zip": _evil_zip(tmp_path, how)}
    _use_hc18(monkeypatch, files)
    sources = _copies(tmp_path / "copies", files)
    root = tmp_path / "deep" / "hc18"  # ../../evil.png from root/training_set is tmp_path/deep

    with pytest.raises(ValueError, match="training_set.zip: member .* refused, nothing unpacked"):
        fetch("hc18", root, sources=sources)
    assert not root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copies", "deep"]
    assert list((tmp_path / "deep").iterdir()) == []


@pytest.mark.parametrize(
    ("members", "found"),
    [
        (_training_members("images/"), "found images/"),
        (_training_members(""), "found at its top: 000_HC.png"),
    ],
)
def test_wrong_top_folder_is_refused(tmp_path, monkeypatch, members, found):
    files = _hc18_files(training=members)
    _use_hc18(monkeypatch, files)

    with pytest.raises(
        ValueError, match=f"expected its files in one folder training_set/, {found}"
    ):
        fetch("hc18", tmp_path / "hc18", sources=_copies(tmp_path / "copies", files))
    assert not (tmp_path / "hc18").exists()  # created by the fetch, removed again


def test_double_nesting_is_undone(tmp_path, monkeypatch):
    files = _hc18_files(training=_training_members("training_set/training_set/"))
    _use_hc18(monkeypatch, files)

    fetch("hc18", tmp_path / "hc18", sources=_copies(tmp_path / "copies", files))
    assert len(list_hc18(tmp_path / "hc18")) == 3
    assert not (tmp_path / "hc18" / "training_set" / "training_set").exists()


def test_ctrl_c_while_unpacking_leaves_nothing(tmp_path, monkeypatch):
    files = _hc18_files()
    _use_hc18(monkeypatch, files)
    real_copy = fetch_module.shutil.copyfileobj
    calls = []

    def interrupted_copy(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(fetch_module.shutil, "copyfileobj", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        fetch("hc18", tmp_path / "hc18", sources=_copies(tmp_path / "copies", files))
    assert not (tmp_path / "hc18").exists()  # created by the fetch, removed again


def test_failure_while_moving_into_place_puts_back_what_was_moved(tmp_path, monkeypatch):
    files = _hc18_files()
    _use_hc18(monkeypatch, files)
    real_rename = Path.rename
    calls = []

    def flaky_rename(self, target):
        calls.append(1)
        if len(calls) == 2:  # the first entry is in root already
            raise OSError("disk went away")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", flaky_rename)
    with pytest.raises(OSError, match="disk went away"):
        fetch("hc18", tmp_path / "hc18", sources=_copies(tmp_path / "copies", files))
    assert not (tmp_path / "hc18").exists()  # created by the fetch, removed again


# --------------------------------------------------------------------------------------------
# Files copied in by hand (--from)
# --------------------------------------------------------------------------------------------


def test_from_copies_needs_no_network(tmp_path, zenodo, hc18, monkeypatch):
    monkeypatch.setenv(API_ENV, zenodo.api)
    sources = _copies(tmp_path / "copies", hc18)

    fetched = fetch("hc18", tmp_path / "hc18", sources=sources)

    assert zenodo.requests == []
    assert len(list_hc18(tmp_path / "hc18")) == 3
    assert fetched.record["how"].startswith("--from")
    assert all(path.read_bytes() == hc18[path.name] for path in sources)  # left as they were


def test_from_damaged_copy_names_file_expected_and_found(tmp_path, monkeypatch):
    files = _hc18_files()
    _use_hc18(monkeypatch, files)
    sources = _copies(tmp_path / "copies", files)
    damaged = files["test_set.zip"][:-10]  # an incomplete copy
    sources[1].write_bytes(damaged)

    with pytest.raises(ValueError) as caught:
        fetch("hc18", tmp_path / "hc18", sources=sources)
    assert str(caught.value) == (
        f"--from {sources[1]}: md5 {_md5(damaged)} ({len(damaged):,} bytes), expected md5 "
        f"{_md5(files['test_set.zip'])} ({len(files['test_set.zip']):,} bytes) for test_set.zip"
    )
    assert sources[1].read_bytes() == damaged
    assert not (tmp_path / "hc18").exists()


def test_from_names_the_files_it_expects(tmp_path, monkeypatch):
    files = _hc18_files()
    _use_hc18(monkeypatch, files)
    sources = _copies(tmp_path / "copies", files)
    other = tmp_path / "copies" / "hc18.zip"
    other.write_bytes(b"")

    with pytest.raises(ValueError, match=r"hc18.zip: not a file of HC18 .* expected one of "):
        fetch("hc18", tmp_path / "hc18", sources=[other])
    with pytest.raises(ValueError, match=r"needs also test_set.zip, training_set_pixel_size"):
        fetch("hc18", tmp_path / "hc18", sources=sources[:1])


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_cli_fetches_then_finds_it_already_there(tmp_path, zenodo, hc18, capsys):
    root = tmp_path / "hc18"
    args = ["data", "fetch", "hc18", "--root", str(root)]

    assert main([*args, "--api", zenodo.api]) == 0
    out = capsys.readouterr().out
    assert f"HC18 is in {root}: 3 training images" in out
    assert f"data: {{kind: hc18, root: {root}}}" in out
    assert f"fetalgan data check {root}" in out

    n_requests = len(zenodo.requests)
    assert main(args) == 0  # no --api: a finished root needs no network
    out = capsys.readouterr().out
    assert f"HC18 is already in {root}" in out
    assert f"data: {{kind: hc18, root: {root}}}" in out
    assert len(zenodo.requests) == n_requests

    (root / "training_set" / "001_HC.png").unlink()  # the re-check counts the files again
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fetalgan: error: {root}: dataset.json says HC18 was fetched")
    assert "found 2 training images" in err


def test_cli_offline_is_a_one_line_error(tmp_path, hc18, capsys):
    root = tmp_path / "hc18"
    assert main(["data", "fetch", "hc18", "--root", str(root), "--api", _closed_api()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fetalgan: error: cannot reach")
    assert f"fetalgan data fetch hc18 --root {root} --from training_set.zip" in err
    assert err.count("\n") == 1
    assert not root.exists()  # no empty folders left behind


# --------------------------------------------------------------------------------------------
# One fetch at a time per root
# --------------------------------------------------------------------------------------------


def test_a_second_fetch_of_a_root_is_refused_while_the_first_works(tmp_path, zenodo, hc18):
    root = tmp_path / "hc18"
    zenodo.hold["training_set.zip"] = threading.Event()
    outcome = {}

    def first() -> None:
        try:
            outcome["fetched"] = fetch("hc18", root, api=zenodo.api)
        except Exception as err:  # reported by the assertions below
            outcome["error"] = err

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert zenodo.holding.wait(30), "the first fetch never asked for the zip"
        holder = json.loads((root / LOCK_FILE).read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        n_requests = len(zenodo.requests)
        with pytest.raises(RootInUse, match=r"another fetch is working on it \(host .*, pid \d+"):
            fetch("hc18", root, api=zenodo.api)
        assert len(zenodo.requests) == n_requests  # the second asked the server nothing
    finally:
        zenodo.hold["training_set.zip"].set()
        worker.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert not outcome["fetched"].already_there
    assert not (root / LOCK_FILE).exists()
    assert fetch("hc18", root, api=zenodo.api).already_there  # the next run finds it


def test_a_lock_left_by_a_killed_fetch_on_this_host_is_taken_over(tmp_path, zenodo, hc18):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    root = tmp_path / "hc18"
    root.mkdir()
    lock = {"host": socket.gethostname(), "pid": int(gone.stdout), "started": "earlier"}
    (root / LOCK_FILE).write_text(json.dumps(lock))

    assert not fetch("hc18", root, api=zenodo.api).already_there
    assert [p.name for p in list_hc18(root)] == ["000_HC.png", "001_HC.png", "002_2HC.png"]
    assert not (root / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_refused_naming_it(tmp_path, zenodo, hc18, capsys):
    root = tmp_path / "hc18"
    root.mkdir()
    lock = {"host": "node-b", "pid": 4242, "started": "2026-12-07T20:00:00+00:00"}
    (root / LOCK_FILE).write_text(json.dumps(lock))

    assert main(["data", "fetch", "hc18", "--root", str(root), "--api", zenodo.api]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fetalgan: error: --root {root}: another fetch is working on it ")
    assert "(host node-b, pid 4242, since 2026-12-07T20:00:00+00:00)" in err
    assert f"rm {root / LOCK_FILE}" in err and err.count("\n") == 1
    assert zenodo.requests == []  # nothing asked of the server
    assert json.loads((root / LOCK_FILE).read_text()) == lock  # another host's lock stays
    assert sorted(p.name for p in root.iterdir()) == [LOCK_FILE]
