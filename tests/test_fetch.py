"""`segdistill fetch`: downloads from a real local HTTP server with injected faults, safe extraction,
lock file, structural check, and the CLI. No internet."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest

from _fetch_server import FileServer
from segdistill_cli import fetch as F
from segdistill_cli.cli import main
from segdistill_cli.config import load_config
from segdistill_cli.errors import SegDistillError
from segdistill_cli.fetch import REGISTRY, fetch_models, install_archive, model_manifest
from segdistill_cli.models import parameter_manifest
from segdistill_cli.weights import make_legacy_tarball, read_tensor
from conftest import ROOT

STUDENT = "mobilenet_cityscapes"
TEACHER = "xception65_bn_cityscapes"
TGZ = f"/{STUDENT}.tgz"  # server path of the student archive (mirror layout)

# A small stand-in for the student's manifest: the fault-injection tests need a few hundred KB
# (to see a resume) but not the real 7 MB.
SMALL = {"conv1_1_weights": (32, 3, 3, 3), "conv1_1_bn_scale": (32,),
         "logit/weights": (19, 320, 1, 1), "logit/biases": (19,), "big/weights": (64, 64, 8, 8)}


def tensors(manifest, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in manifest.items()}


def small_archive(tmp_path: Path, manifest=SMALL, seed=0, name="small.tgz", extra=None) -> bytes:
    path = make_legacy_tarball(tmp_path / name, STUDENT, tensors(manifest, seed),
                               extra_files={"logit/weights_velocity_0": b"x" * 10,
                                            "__model__": b"\x08\x01", **(extra or {})})
    return path.read_bytes()


class Quiet:
    """Progress sink that records what it was told (and can simulate Ctrl-C)."""

    def __init__(self, interrupt_after: int | None = None):
        self.starts, self.done, self.interrupt_after = [], 0, interrupt_after

    def start(self, label, total, done):
        self.starts.append((label, total, done))

    def advance(self, n):
        self.done += n
        if self.interrupt_after is not None and self.done >= self.interrupt_after:
            raise KeyboardInterrupt

    def finish(self):
        pass


@pytest.fixture
def server():
    srv = FileServer()
    srv.url = srv.start()
    yield srv
    srv.stop()


def run(dest, server, which=("student",), manifest=SMALL, **kw):
    kw.setdefault("progress", Quiet())
    kw.setdefault("backoff", 0.01)
    kw.setdefault("log", lambda text: None)
    return fetch_models(list(which), dest, mirror=kw.pop("mirror", server.url if server else None),
                        manifest_for=lambda spec: manifest, **kw)


def leftovers(dest: Path) -> list[str]:
    """Temporary extraction / swap folders that must never survive."""
    return [p.name for p in dest.iterdir() if ".extract-" in p.name or ".old-" in p.name]


# ---- registry ---------------------------------------------------------------------------------

def test_registry_names_urls_folders_and_configs():
    assert set(REGISTRY) == {TEACHER, STUDENT}
    assert REGISTRY[TEACHER].url == "https://paddleseg.bj.bcebos.com/models/xception65_bn_cityscapes.tgz"
    assert REGISTRY[STUDENT].url == "https://paddleseg.bj.bcebos.com/models/mobilenet_cityscapes.tgz"
    assert [s.name for s in F.select_models(["teacher"])] == [TEACHER]
    assert [s.name for s in F.select_models([])] == [TEACHER, STUDENT]
    with pytest.raises(SegDistillError, match="unknown model 'resnet'"):
        F.select_models(["resnet"])
    # the folders are what the tutorial configs point at
    t = load_config(ROOT / REGISTRY[TEACHER].config)
    s = load_config(ROOT / REGISTRY[STUDENT].config)
    assert t.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR == f"pretrained_model/{TEACHER}"
    assert s.TRAIN.PRETRAINED_MODEL_DIR == f"pretrained_model/{STUDENT}"


@pytest.mark.parametrize("name,count", [(TEACHER, 732), (STUDENT, 262)])
def test_registry_manifest_matches_the_tutorial_config(name, count):
    spec = REGISTRY[name]
    from_keys = model_manifest(spec)
    assert from_keys == parameter_manifest(load_config(ROOT / spec.config))
    assert len(from_keys) == count


# ---- happy path, idempotency, lock file -------------------------------------------------------

def test_real_student_archive_end_to_end_then_present_without_network(tmp_path, server):
    manifest = model_manifest(REGISTRY[STUDENT])
    values = tensors(manifest)
    data = make_legacy_tarball(tmp_path / "s.tgz", STUDENT, values,
                               extra_files={"conv1_1_weights_velocity_0": b"junk"}).read_bytes()
    server.files[TGZ] = data
    dest = tmp_path / "pretrained_model"
    [res] = run(dest, server, manifest=manifest)
    assert res.status == "downloaded" and res.bytes == len(data)
    assert res.sha256 == hashlib.sha256(data).hexdigest()
    assert res.url == server.url + TGZ and res.path == str(dest / STUDENT)
    for name in ("conv1_1_weights", "logit/weights", "conv8_1_linear_bn_variance"):
        np.testing.assert_array_equal(read_tensor(dest / STUDENT / name), values[name])
    lock = json.loads((dest / F.LOCK_FILE).read_text())
    assert lock["models"][STUDENT] == {"url": res.url, "bytes": len(data), "sha256": res.sha256}
    assert not list(dest.glob("*.part")) and not leftovers(dest)

    server.stop()  # second run: no network I/O at all
    n_requests = len(server.log)
    [again] = run(dest, server, manifest=manifest)
    assert again.status == "present" and again.sha256 == res.sha256
    assert len(server.log) == n_requests
    server.start()  # let the fixture stop it cleanly


def test_force_downloads_again_and_lock_mismatch_is_an_error(tmp_path, server):
    dest = tmp_path / "d"
    server.files[TGZ] = small_archive(tmp_path)
    [first] = run(dest, server)
    [forced] = run(dest, server, force=True)
    assert forced.status == "downloaded" and forced.sha256 == first.sha256
    assert len(server.log) == 2
    # the server now serves a different file: the lock pins the first one
    server.files[TGZ] = small_archive(tmp_path, seed=1, name="other.tgz")
    before = read_tensor(dest / STUDENT / "logit/biases")
    with pytest.raises(SegDistillError) as err:
        run(dest, server, force=True)
    msg = str(err.value)
    assert "sha256 mismatch" in msg and first.sha256 in msg
    assert hashlib.sha256(server.files[TGZ]).hexdigest() in msg and F.LOCK_FILE in msg
    np.testing.assert_array_equal(read_tensor(dest / STUDENT / "logit/biases"), before)
    assert not list(dest.glob("*.part"))


def test_sha256_pin_mismatch_leaves_nothing(tmp_path, server):
    dest = tmp_path / "d"
    server.files[TGZ] = small_archive(tmp_path)
    with pytest.raises(SegDistillError, match=r"expected 0{64} \(from --sha256\), got [0-9a-f]{64}"):
        run(dest, server, sha256s={"student": "0" * 64})
    assert not (dest / STUDENT).exists() and not (dest / F.LOCK_FILE).exists()
    assert not list(dest.glob("*.part"))
    good = hashlib.sha256(server.files[TGZ]).hexdigest()
    [res] = run(dest, server, sha256s={STUDENT: good.upper()})
    assert res.sha256 == good


def test_from_file_installs_without_network_and_is_verified(tmp_path):
    dest = tmp_path / "d"
    archive = tmp_path / "local.tgz"
    archive.write_bytes(small_archive(tmp_path))
    [res] = run(dest, None, from_files={"student": archive})
    assert res.status == "installed-from-file" and res.url == str(archive.resolve())
    assert (dest / STUDENT / "big/weights").is_file()
    assert archive.exists()  # the user's file is not consumed
    [again] = run(dest, None, from_files={"student": archive})
    assert again.status == "present"


# ---- download faults ---------------------------------------------------------------------------

def test_dropped_connection_resumes_with_range(tmp_path, server):
    data = small_archive(tmp_path)
    server.files[TGZ] = data
    server.drop_after[TGZ] = len(data) // 2
    [res] = run(tmp_path / "d", server)
    assert res.status == "resumed" and res.sha256 == hashlib.sha256(data).hexdigest()
    first, second = server.log
    assert first.sent == len(data) // 2 and second.status == 206
    # the client keeps what it wrote (whole chunks; a torn last chunk is fetched again)
    resumed_at = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(data) // 2
    assert second.sent == len(data) - resumed_at < len(data)


def test_ctrl_c_keeps_the_part_and_the_next_run_resumes(tmp_path, server):
    data = small_archive(tmp_path)
    server.files[TGZ] = data
    dest = tmp_path / "d"
    with pytest.raises(F.FetchInterrupted, match="run the same fetch again to resume") as err:
        run(dest, server, progress=Quiet(interrupt_after=1))
    assert err.value.exit_code == 130
    part = dest / f"{STUDENT}.tgz.part"
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    [res] = run(dest, server)
    assert res.status == "resumed" and res.sha256 == hashlib.sha256(data).hexdigest()
    assert server.log[-1].range == f"bytes={kept}-" and server.log[-1].sent == len(data) - kept


def test_server_ignoring_range_restarts_cleanly(tmp_path, server):
    data = small_archive(tmp_path)
    server.files[TGZ] = data
    server.ignore_range = True
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / f"{STUDENT}.tgz.part").write_bytes(b"garbage that must not be kept")
    [res] = run(dest, server)
    assert res.status == "downloaded" and res.sha256 == hashlib.sha256(data).hexdigest()
    assert server.log[0].range is not None and server.log[0].status == 200


def test_part_longer_than_the_file_restarts_after_416(tmp_path, server):
    data = small_archive(tmp_path)
    server.files[TGZ] = data
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / f"{STUDENT}.tgz.part").write_bytes(data + b"tail")
    [res] = run(dest, server)
    assert res.status == "downloaded" and res.sha256 == hashlib.sha256(data).hexdigest()
    assert [r.status for r in server.log] == [416, 200]


def test_500_then_success(tmp_path, server):
    server.files[TGZ] = small_archive(tmp_path)
    server.fail_times[TGZ] = 2
    [res] = run(tmp_path / "d", server)
    assert res.status == "downloaded"
    assert [r.status for r in server.log] == [500, 500, 200]


def test_persistent_500_gives_up_after_bounded_retries(tmp_path, server):
    server.files[TGZ] = small_archive(tmp_path)
    server.fail_times[TGZ] = 100
    with pytest.raises(SegDistillError, match="failed after 3 attempts: HTTP 500"):
        run(tmp_path / "d", server, retries=2)
    assert len(server.log) == 3


@pytest.mark.parametrize("status", [404, 403])
def test_client_errors_fail_at_once(tmp_path, server, status):
    server.files[TGZ] = b"x"
    server.status[TGZ] = status
    with pytest.raises(SegDistillError, match=f"HTTP {status}.*check --url/--mirror"):
        run(tmp_path / "d", server)
    assert len(server.log) == 1


def test_wrong_content_length_is_an_incomplete_download(tmp_path, server):
    server.files[TGZ] = small_archive(tmp_path)
    server.extra_length[TGZ] = 1000
    with pytest.raises(SegDistillError, match="failed after 2 attempts.*partial data kept"):
        run(tmp_path / "d", server, retries=1)
    assert not (tmp_path / "d" / STUDENT).exists()


def test_connection_refused_and_dns_failure(tmp_path, server, monkeypatch):
    server.stop()
    with pytest.raises(SegDistillError, match="failed after 2 attempts: ConnectionError"):
        run(tmp_path / "d", server, retries=1)
    server.start()

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(SegDistillError, match="no network: cannot resolve"):
        run(tmp_path / "d", server, mirror="http://paddleseg.example.invalid/models")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux /dev/full")
def test_disk_full_is_a_clear_error(tmp_path, server):
    server.files[TGZ] = small_archive(tmp_path)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / f"{STUDENT}.tgz.part").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(SegDistillError, match="disk full while writing"):
        run(dest, server)


# ---- archives: corrupt, malicious, wrong contents, atomic swap -----------------------------

def test_truncated_gzip_is_corrupt_and_leaves_nothing(tmp_path, server):
    data = small_archive(tmp_path)
    server.files[TGZ] = data[: len(data) // 2]
    dest = tmp_path / "d"
    with pytest.raises(SegDistillError, match="corrupt archive .*truncated or not a .tgz"):
        run(dest, server)
    assert not (dest / STUDENT).exists() and not leftovers(dest)
    assert not list(dest.glob("*.part")) and not (dest / F.LOCK_FILE).exists()


def _evil_tar(path: Path, kind: str, outside: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo(f"{STUDENT}/conv1_1_weights")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"abc"))
        if kind == "traversal":
            info = tarfile.TarInfo(f"{STUDENT}/../../{outside.name}")
        elif kind == "absolute":
            info = tarfile.TarInfo(str(outside))
        elif kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo(f"{STUDENT}/link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = str(outside)
        else:  # fifo
            info = tarfile.TarInfo(f"{STUDENT}/pipe")
            info.type = tarfile.FIFOTYPE
        if info.type == tarfile.REGTYPE:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:
            tar.addfile(info)
    return path


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "hardlink", "fifo"])
def test_malicious_members_are_rejected(tmp_path, kind):
    dest = tmp_path / "work" / "d"
    outside = tmp_path / "evil.txt"
    archive = _evil_tar(tmp_path / "evil.tgz", kind, outside)
    with pytest.raises(SegDistillError, match="unsafe archive .*nothing was extracted"):
        run(dest, None, from_files={"student": archive})
    assert not outside.exists()
    assert sorted(p.name for p in dest.iterdir()) == []  # not even the model folder


def test_structural_check_names_missing_and_misshaped_parameters(tmp_path):
    broken = dict(tensors(SMALL))
    del broken["logit/biases"]
    broken["big/weights"] = np.zeros((64, 64, 3, 3), np.float32)
    archive = make_legacy_tarball(tmp_path / "b.tgz", STUDENT, broken)
    dest = tmp_path / "d"
    with pytest.raises(SegDistillError) as err:
        run(dest, None, from_files={"student": archive})
    msg = str(err.value)
    assert "1 of 5 parameters missing (logit/biases)" in msg
    assert "big/weights: file [64, 64, 3, 3], model needs [64, 64, 8, 8]" in msg
    assert not (dest / STUDENT).exists() and not leftovers(dest)


def test_failed_reinstall_keeps_the_previous_folder_and_good_one_replaces_it(tmp_path):
    dest = tmp_path / "d"
    good = tmp_path / "good.tgz"
    good.write_bytes(small_archive(tmp_path))
    run(dest, None, from_files={"student": good})
    (dest / STUDENT / "marker").write_text("old")
    bad = make_legacy_tarball(tmp_path / "bad.tgz", STUDENT, {"conv1_1_weights": np.zeros(3)})
    with pytest.raises(SegDistillError):
        run(dest, None, from_files={"student": bad}, force=True,
            sha256s={"student": hashlib.sha256(bad.read_bytes()).hexdigest()})
    assert (dest / STUDENT / "marker").read_text() == "old" and not leftovers(dest)
    [res] = run(dest, None, from_files={"student": good}, force=True)
    assert res.status == "installed-from-file"
    assert not (dest / STUDENT / "marker").exists() and not leftovers(dest)


def test_flat_archive_and_other_root_name_are_accepted(tmp_path):
    values = tensors(SMALL)
    flat = tmp_path / "flat.tgz"
    with tarfile.open(flat, "w:gz") as tar:
        for name, arr in values.items():
            from segdistill_cli.weights import encode_tensor
            blob = encode_tensor(arr)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    install_archive(flat, tmp_path / "a" / STUDENT, SMALL)
    np.testing.assert_array_equal(read_tensor(tmp_path / "a" / STUDENT / "logit/weights"),
                                  values["logit/weights"])
    other = make_legacy_tarball(tmp_path / "o.tgz", "mobilenet_cityscapes_v2", values)
    install_archive(other, tmp_path / "b" / STUDENT, SMALL)
    assert (tmp_path / "b" / STUDENT / "big/weights").is_file()


def test_bad_options_are_named(tmp_path):
    with pytest.raises(SegDistillError, match="is not a 64-digit hex"):
        run(tmp_path, None, sha256s={"teacher": "abc"})
    with pytest.raises(SegDistillError, match="unknown model in --url 'mobilenet'"):
        run(tmp_path, None, urls={"mobilenet": "http://x"})
    with pytest.raises(SegDistillError, match="--from for mobilenet_cityscapes: file not found"):
        run(tmp_path, None, from_files={"student": tmp_path / "nope.tgz"})


def test_plain_progress_lines():
    out = io.StringIO()
    p = F.PlainProgress(out)
    p.start("m", 1000, 0)
    for _ in range(10):
        p.advance(100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "m: downloading 1.0 KB" and len(lines) == 11
    assert lines[-1].startswith("m: 1.0 KB / 1.0 KB (100%)") and "ETA 0s" in lines[-1]


# ---- the CLI ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_tgz(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("arch") / "s.tgz"
    return make_legacy_tarball(path, STUDENT, tensors(model_manifest(REGISTRY[STUDENT]))).read_bytes()


def test_cli_happy_path_json_and_present(tmp_path, server, capsys, student_tgz):
    server.files[TGZ] = student_tgz
    dest = tmp_path / "pm"
    assert main(["fetch", "student", "--dest", str(dest), "--mirror", server.url]) == 0
    out, err = capsys.readouterr()
    assert f"downloaded {STUDENT} -> {dest / STUDENT}" in out
    assert f"{STUDENT}: downloaded" in err
    assert main(["fetch", "student", "--dest", str(dest), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry == {"name": STUDENT, "url": server.url + TGZ, "path": str(dest / STUDENT),
                     "bytes": len(student_tgz),
                     "sha256": hashlib.sha256(student_tgz).hexdigest(), "status": "present"}


def test_cli_url_override_and_failure_exit_code(tmp_path, server, capsys, monkeypatch):
    monkeypatch.setenv("SEGDISTILL_MIRROR", server.url)  # --url wins over the mirror
    code = main(["fetch", "student", "--dest", str(tmp_path), "--url",
                 f"student={server.url}/missing.tgz"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {server.url}/missing.tgz: HTTP 404" in err
    assert main(["fetch", "--dest", str(tmp_path), "--url", "student"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
