"""The example deployment files (docs/deploy/) parse with the tools that read them, and the
environment file and README name every variable config.py reads."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"


def _config_variables() -> set[str]:
    source = (ROOT / "config.py").read_text(encoding="utf-8")
    return set(re.findall(r'env_(?:str|int|bool)\("([A-Z_]+)"', source))


def test_the_environment_file_and_readme_name_every_variable():
    variables = _config_variables()
    assert len(variables) > 40
    env_file = (DEPLOY / "channeldesk.env").read_text(encoding="utf-8")
    named = set(re.findall(r"^#?([A-Z_]+)=", env_file, flags=re.M))
    assert variables - named == set(), "docs/deploy/channeldesk.env misses these"
    assert named - variables == set(), "docs/deploy/channeldesk.env names variables config.py does not read"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert {v for v in variables if f"`{v}`" not in readme} == set(), "README.md's table misses these"


def _self_signed(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "desk.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def test_the_nginx_config_parses(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed: docs/deploy/nginx.conf not checked (apt-get install nginx-light)")
    _self_signed(tmp_path)
    conf = (DEPLOY / "nginx.conf").read_text(encoding="utf-8").replace("/etc/ssl/channeldesk", str(tmp_path))
    mime = Path("/etc/nginx/mime.types")
    if not mime.exists():
        conf = conf.replace("include /etc/nginx/mime.types;", "")
    (tmp_path / "nginx.conf").write_text(conf, encoding="utf-8")
    (tmp_path / "logs").mkdir()
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    for needed in ("proxy_set_header Upgrade $http_upgrade", "ip_hash", "X-Forwarded-Proto", "/socket.io/"):
        assert needed in conf


def test_the_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: docs/deploy/*.service not checked")
    if not (ROOT / ".venv" / "bin" / "gunicorn").exists():
        pytest.skip("no .venv with gunicorn to point the units at")
    units = []
    for source in [*sorted(DEPLOY.glob("*.service")), DEPLOY / "channeldesk.target"]:
        text = source.read_text(encoding="utf-8").replace("/srv/channeldesk", str(ROOT))
        name = source.name.replace("@.", "@8001.") if "@." in source.name else source.name
        (tmp_path / name).write_text(text, encoding="utf-8")
        units.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, cwd=tmp_path)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "channeldesk" in line]
    # The target wants instances that are not in this folder; everything else must be clean.
    ours = [line for line in ours if "Failed to add dependency" not in line and "not found" not in line]
    assert ours == [], ours
