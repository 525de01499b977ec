#!/usr/bin/env python3
"""Static checks of the deployment files (there is no Docker engine in CI).

* docker-compose.yml parses, has every service the README describes, its build contexts point at
  existing Dockerfiles, and every variable it gives pgvigil is one pgvigil reads.
* both services publish their health port, the images' health checks run the service binary,
  and .env stays out of the build context.
* every image is pinned to a version (no `latest`, no bare major), and the Rust build image is the
  toolchain that rust-toolchain.toml pins.
* railway.toml parses and uses only known config-as-code keys.
"""
import pathlib
import re
import sys
import tomllib

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
errors = []

config_rs = (root / "crates/core/src/infra/config/raw.rs").read_text()
block = config_rs[config_rs.index("pub const VARIABLES"):]
block = block[: block.index("];")]
known_vars = set(re.findall(r'"([A-Z0-9_]+)"', block))

compose = yaml.safe_load((root / "docker-compose.yml").read_text())
services = compose.get("services", {})
for name in ["source-db", "scratch-db", "s3", "s3-init", "backup", "verify"]:
    if name not in services:
        errors.append(f"docker-compose.yml: service {name!r} is missing")
for name in ["backup", "verify"]:
    svc = services.get(name, {})
    dockerfile = svc.get("build", {}).get("dockerfile", "")
    if not (root / dockerfile).is_file():
        errors.append(f"docker-compose.yml: {name} builds {dockerfile!r}, which does not exist")
    for var in svc.get("environment", {}):
        if var not in known_vars:
            errors.append(f"docker-compose.yml: {name} sets {var}, which pgvigil does not read")
    port = str(svc.get("environment", {}).get("PORT", ""))
    if not any(str(p).endswith(":" + port) for p in svc.get("ports", [])):
        errors.append(f"docker-compose.yml: {name} does not publish its health port {port or '(PORT unset)'}")
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("./") and not (root / src).exists():
            errors.append(f"docker-compose.yml: {name} mounts {src}, which does not exist")

# The images' health checks run the service binary they ship.
for name, binary in [("Dockerfile.backup", "pgvigil-backup"), ("Dockerfile.verify", "pgvigil-verify")]:
    text = (root / name).read_text()
    if f'CMD ["{binary}", "--healthcheck"]' not in text:
        errors.append(f"{name}: HEALTHCHECK must run {binary} --healthcheck")
ignored = (root / ".dockerignore").read_text().split()
if ".env" not in ignored:
    errors.append(".dockerignore: .env must be kept out of the build context (it holds local secrets)")

# Images pinned: a rebuild next month gets the same bases as today's.
toolchain = tomllib.loads((root / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
images = [(n, svc["image"]) for n, svc in services.items() if "image" in svc]
for name in ["Dockerfile.backup", "Dockerfile.verify"]:
    images += [(name, m) for m in re.findall(r"^FROM\s+(\S+)", (root / name).read_text(), re.M)]
for where, image in images:
    tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
    if not re.search(r"\d+\.\d+|\d{8}", tag):
        errors.append(f"{where}: image {image} is not pinned to a version (use a full version tag)")
    if image.startswith("rust:") and not tag.startswith(toolchain + "-"):
        errors.append(f"{where}: {image} differs from rust-toolchain.toml's {toolchain}")

railway = tomllib.loads((root / "railway.toml").read_text())
allowed = {
    "build": {"builder", "dockerfilePath", "watchPatterns", "buildCommand"},
    "deploy": {"startCommand", "restartPolicyType", "restartPolicyMaxRetries", "healthcheckPath",
               "healthcheckTimeout", "numReplicas", "cronSchedule", "overlapSeconds", "drainingSeconds"},
}
for section, keys in railway.items():
    if section not in allowed:
        errors.append(f"railway.toml: unknown section [{section}]")
        continue
    for key in keys:
        if key not in allowed[section]:
            errors.append(f"railway.toml: unknown key {section}.{key}")
if railway.get("deploy", {}).get("restartPolicyType") not in {"ON_FAILURE", "ALWAYS", "NEVER"}:
    errors.append("railway.toml: deploy.restartPolicyType must be ON_FAILURE, ALWAYS or NEVER")

for e in errors:
    print(e)
print("deployment files: " + ("FAILED" if errors else "ok"))
sys.exit(1 if errors else 0)
