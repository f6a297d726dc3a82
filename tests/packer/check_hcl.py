#!/usr/bin/env python3
"""Checks the Packer template in packer/ with a real HCL2 parser (python-hcl2).

Debian's packer (1.6.6) predates the Proxmox plugin's current schema and cannot
install plugins offline, so `packer validate` cannot run in CI. This check
covers what it would catch for our files:

- every *.pkr.hcl and *.pkrvars.hcl parses;
- every var.X / local.X / source.T.N reference resolves, and every variable,
  local and source is used;
- every source's builder comes from a required plugin, and its attributes and
  nested blocks are ones that builder accepts (names from the plugins'
  generated HCL2 specs: packer-plugin-proxmox >= 1.2, packer-plugin-qemu >= 1.1);
- files named as ${path.root}/... exist; the preseed template's placeholders
  are exactly the templatefile() arguments;
- the example .pkrvars.hcl sets only declared variables with the right types
  and no secrets; secret-looking variables are sensitive;
- the DELEGATE_* settings handed to provision.sh are ones it reads;
- proxmox_bridge does not default to vmbr0 (the management bridge: every
  clone keeps the template's NIC);
- README.md's walkthrough runs in order on a fresh cluster: the pool is
  made before anything uses --pool, downloaded files get absolute paths,
  and the base image gets exactly one cloud-init drive.

Usage: check_hcl.py PACKER_DIR        Exit status 0 when all checks pass.
"""

import re
import sys
from pathlib import Path

import hcl2

COMMUNICATOR = {
    "communicator", "pause_before_connecting", "ssh_host", "ssh_port", "ssh_username",
    "ssh_password", "ssh_timeout", "ssh_private_key_file", "ssh_certificate_file", "ssh_pty",
    "ssh_handshake_attempts", "ssh_clear_authorized_keys", "ssh_agent_auth",
    "ssh_disable_agent_forwarding", "ssh_bastion_host", "ssh_bastion_port",
    "ssh_bastion_username", "ssh_bastion_password", "ssh_bastion_private_key_file",
    "ssh_file_transfer_method", "ssh_proxy_host", "ssh_proxy_port", "ssh_keep_alive_interval",
    "ssh_read_write_timeout", "ssh_ciphers", "ssh_key_exchange_algorithms",
    "temporary_key_pair_type", "temporary_key_pair_bits",
}
BOOT_HTTP = {
    "http_directory", "http_content", "http_port_min", "http_port_max", "http_bind_address",
    "boot_keygroup_interval", "boot_wait", "boot_command", "boot_key_interval",
}
PROXMOX_COMMON = COMMUNICATOR | BOOT_HTTP | {
    "proxmox_url", "insecure_skip_tls_verify", "username", "password", "token", "node", "pool",
    "task_timeout", "vm_name", "vm_id", "tags", "boot", "memory", "ballooning_minimum", "cores",
    "cpu_type", "sockets", "numa", "os", "bios", "efi_config", "efidisk", "machine", "rng0",
    "tpm_config", "vga", "network_adapters", "disks", "pci_devices", "serials", "qemu_agent",
    "qemu_guest_agent", "scsi_controller", "onboot", "disable_kvm", "template_name",
    "template_description", "skip_convert_to_template", "cloud_init", "cloud_init_storage_pool",
    "cloud_init_disk_type", "additional_iso_files", "vm_interface", "qemu_additional_args",
}
ISO_BLOCK = {
    "device", "type", "index", "iso_file", "iso_url", "iso_urls", "iso_checksum",
    "iso_storage_pool", "iso_download_pve", "unmount", "keep_cdrom_device", "iso_target_path",
    "iso_target_extension", "cd_files", "cd_content", "cd_label",
}
PROXMOX_NESTED = {
    "network_adapters": {"model", "packet_queues", "mac_address", "mtu", "bridge", "vlan_tag",
                         "firewall"},
    "disks": {"type", "storage_pool", "storage_pool_type", "disk_size", "cache_mode", "format",
              "io_thread", "asyncio", "exclude_from_backup", "discard", "ssd"},
    "boot_iso": ISO_BLOCK,
    "additional_iso_files": ISO_BLOCK,
    "ipconfig": {"ip", "gateway", "ip6", "gateway6"},
}
BUILDERS = {
    "proxmox-clone": ("proxmox", PROXMOX_COMMON | {
        "clone_vm", "clone_vm_id", "full_clone", "nameserver", "searchdomain", "ipconfig"}),
    "proxmox-iso": ("proxmox", PROXMOX_COMMON | {
        "boot_iso", "iso_checksum", "iso_url", "iso_urls", "iso_file", "iso_storage_pool",
        "iso_download_pve", "unmount_iso", "iso_target_path", "iso_target_extension",
        "cd_files", "cd_content", "cd_label"}),
    "qemu": ("qemu", COMMUNICATOR | BOOT_HTTP | {
        "iso_checksum", "iso_url", "iso_urls", "iso_target_path", "iso_target_extension",
        "shutdown_command", "shutdown_timeout", "host_port_min", "host_port_max",
        "skip_nat_mapping", "ssh_host_port_min", "ssh_host_port_max", "floppy_files",
        "floppy_dirs", "floppy_label", "cd_files", "cd_content", "cd_label", "iso_skip_cache",
        "accelerator", "disk_additional_size", "cpus", "firmware", "disk_interface", "disk_size",
        "skip_resize_disk", "disk_cache", "disk_discard", "disk_detect_zeroes", "skip_compaction",
        "disk_compression", "format", "headless", "disk_image", "use_backing_file",
        "machine_type", "memory", "net_device", "net_bridge", "output_directory", "qemuargs",
        "qemu_img_args", "qemu_binary", "qmp_enable", "qmp_socket_path", "use_default_display",
        "display", "vnc_bind_address", "vnc_use_password", "vnc_port_min", "vnc_port_max",
        "vm_name", "cdrom_interface", "run_once"}),
}
# Variables that may stay unset in the example: alternatives and optional extras.
OPTIONAL_IN_EXAMPLE = {"proxmox_vlan_tag", "clone_vm_id", "iso_file"}
META = {"__is_block__", "__comments__", "__start_line__", "__end_line__"}

errors = []


def fail(msg):
    errors.append(msg)


def unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def strings(node):
    """Yields every string in a parsed HCL tree (expressions included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            if k not in META:
                yield k
                yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def blocks(doc, kind):
    """Yields (labels, body) of the blocks of one kind."""
    for entry in doc.get(kind, []):
        if not isinstance(entry, dict):
            continue
        keys = [k for k in entry if k not in META]
        if entry.get("__is_block__") and not any(isinstance(entry[k], dict) for k in keys):
            yield (), entry
            continue
        for k in keys:
            body = entry[k]
            if kind == "source" and isinstance(body, dict):
                for name, inner in body.items():
                    if name not in META:
                        yield (unquote(k), unquote(name)), inner
            else:
                yield (unquote(k),), body


def attrs(body):
    return [k for k in body if k not in META]


def main(packer_dir):
    root = Path(packer_dir)
    templates = sorted(root.glob("*.pkr.hcl"))
    varfiles = sorted(root.glob("*.pkrvars.hcl"))
    if not templates:
        fail(f"no *.pkr.hcl files in {root}")
    docs = {}
    for path in templates + varfiles:
        try:
            with path.open() as f:
                docs[path] = hcl2.load(f)
        except Exception as e:  # the parser raises several unrelated types
            fail(f"{path.name}: does not parse: {e}")
    if errors:
        return

    variables, locals_, sources, builds, plugins = {}, set(), {}, [], {}
    for path in templates:
        doc = docs[path]
        for (name,), body in blocks(doc, "variable"):
            if name in variables:
                fail(f"{path.name}: variable {name} declared twice")
            variables[name] = body
        for _, body in blocks(doc, "locals"):
            locals_.update(attrs(body))
        for (btype, name), body in blocks(doc, "source"):
            sources[(btype, name)] = (path.name, body)
        for _, body in blocks(doc, "build"):
            builds.append((path.name, body))
        for _, body in blocks(doc, "packer"):
            for rp in body.get("required_plugins", []):
                plugins.update({k: unquote(v.get("source", "")) for k, v in rp.items()
                                if k not in META})

    text = "\n".join(s for p in templates for s in strings(docs[p]))
    used_vars = set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", text))
    used_locals = set(re.findall(r"\blocal\.([A-Za-z_][\w-]*)", text))
    for v in sorted(used_vars - variables.keys()):
        fail(f"var.{v} is referenced but not declared")
    for v in sorted(variables.keys() - used_vars):
        fail(f"variable {v} is declared but never used")
    for v in sorted(used_locals - locals_):
        fail(f"local.{v} is referenced but not declared")
    for v in sorted(locals_ - used_locals):
        fail(f"local {v} is declared but never used")

    for name, body in variables.items():
        if re.search(r"secret|password", name) and body.get("sensitive") is not True:
            fail(f"variable {name} looks secret but is not sensitive = true")
        if "type" not in body or "description" not in body:
            fail(f"variable {name} needs a type and a description")

    check_sources(sources, plugins)
    check_builds(builds, sources)
    check_paths(root, text)
    check_templatefile(root, text)
    check_provision_env(root, text)
    for path in varfiles:
        check_varfile(path, docs[path], variables)
    check_bridge_default(variables)
    check_readme(root)


def check_bridge_default(variables):
    default = unquote(variables.get("proxmox_bridge", {}).get("default"))
    if default == "vmbr0":
        fail("proxmox_bridge defaults to vmbr0, the management bridge; default to nothing "
             "(the builder chooses) or to the job bridge")


def shell_lines(readme):
    """The lines of README.md's sh code blocks, continuations joined."""
    out, in_sh, cont = [], False, ""
    for line in readme.splitlines():
        if line.strip().startswith("```"):
            in_sh = (not in_sh) and line.strip() == "```sh"
            continue
        if in_sh:
            line = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
            if line.endswith("\\"):
                cont += line[:-1]
                continue
            out.append(cont + line)
            cont = ""
    return out


def check_readme(root):
    path = root / "README.md"
    if not path.is_file():
        fail("README.md is missing")
        return
    lines = shell_lines(path.read_text())
    pool_made = {}
    absolute = {}
    cloudinit_drives = 0
    for n, line in enumerate(lines):
        for pool in re.findall(r"^pveum pool add (\S+)", line):
            pool_made.setdefault(pool, n)
        for pool in re.findall(r"--pool[ =](\S+)", line):
            if pool_made.get(pool, len(lines)) > n:
                fail(f"README.md: `{line.strip()}` uses pool {pool} before `pveum pool add {pool}`")
        for var, value in re.findall(r"^(\w+)=(\S+)$", line.strip()):
            absolute[var] = value.startswith("/")
        for target in re.findall(r"wget .*-O (\S+)", line) + re.findall(r"import-from=([^,\s\"]+)", line):
            var = re.fullmatch(r"\"?\$\{?(\w+)\}?\"?", target)
            if not (target.startswith("/") or (var and absolute.get(var.group(1)))):
                fail(f"README.md: `{line.strip()}`: {target} is not an absolute path")
        if re.search(r"\bwget\b", line) and " -O " not in line:
            fail(f"README.md: `{line.strip()}` saves into the current directory")
        if line.startswith("qm ") and re.search(r"--(ide|sata|scsi)\d+ \S*:cloudinit", line):
            cloudinit_drives += 1
    if cloudinit_drives != 1:
        fail(f"README.md: the base image gets {cloudinit_drives} cloud-init drives, not one")


def check_sources(sources, plugins):
    for (btype, name), (fname, body) in sources.items():
        if btype not in BUILDERS:
            fail(f"{fname}: source {btype}.{name}: unknown builder type")
            continue
        plugin, allowed = BUILDERS[btype]
        if plugin not in plugins:
            fail(f"{fname}: source {btype}.{name} needs plugin '{plugin}' in required_plugins")
        for key in attrs(body):
            if key not in allowed:
                fail(f"{fname}: source {btype}.{name}: '{key}' is not a {btype} setting")
            elif key in PROXMOX_NESTED and btype.startswith("proxmox"):
                items = body[key] if isinstance(body[key], list) else [body[key]]
                for item in items:
                    for inner in attrs(item) if isinstance(item, dict) else []:
                        if inner not in PROXMOX_NESTED[key]:
                            fail(f"{fname}: source {btype}.{name}: '{key}.{inner}' is unknown")


def check_builds(builds, sources):
    if not builds:
        fail("no build block")
    used = set()
    for fname, body in builds:
        for ref in body.get("sources", []):
            m = re.fullmatch(r"source\.([\w-]+)\.([\w-]+)", unquote(ref))
            if not m:
                fail(f"{fname}: build source '{ref}' is not source.TYPE.NAME")
                continue
            if (m[1], m[2]) not in sources:
                fail(f"{fname}: build uses {unquote(ref)}, which is not defined")
            used.add((m[1], m[2]))
        for prov in body.get("provisioner", []):
            for ptype, pbody in prov.items():
                if unquote(ptype) == "shell" and "execute_command" in pbody:
                    cmd = pbody["execute_command"]
                    if "{{ .Vars }}" not in cmd or "{{ .Path }}" not in cmd:
                        fail(f"{fname}: shell execute_command must pass {{{{ .Vars }}}} and {{{{ .Path }}}}")
    for btype, name in sorted(sources.keys() - used):
        fail(f"source {btype}.{name} is not used by any build")


def check_paths(root, text):
    for rel in sorted(set(re.findall(r"\$\{path\.root\}/([^\"$}]*)", text))):
        if rel.startswith("../"):
            continue  # build outputs (the guest binary) need not exist before a build
        if not (root / rel).exists():
            fail(f"${{path.root}}/{rel} does not exist in {root}")


def check_templatefile(root, text):
    for m in re.finditer(r'templatefile\("\$\{path\.root\}/([^"]+)", \{([^}]*)\}', text):
        tpl = root / m[1]
        if not tpl.exists():
            continue  # reported by check_paths
        given = set(re.findall(r"(?:^|,)\s*(\w+)\s*=(?!=)", m[2]))
        wanted = set(re.findall(r"(?<!\$)\$\{(\w+)\}", tpl.read_text()))
        for v in sorted(wanted - given):
            fail(f"{m[1]} uses ${{{v}}} but templatefile() does not pass it")
        for v in sorted(given - wanted):
            fail(f"templatefile() passes {v} but {m[1]} never uses it")


def check_provision_env(root, text):
    script = root / "scripts" / "provision.sh"
    if not script.exists():
        fail("scripts/provision.sh is missing")
        return
    reads = set(re.findall(r"\$\{(DELEGATE_\w+)[-:}]", script.read_text()))
    for name in sorted(set(re.findall(r'"(DELEGATE_\w+)=', text))):
        if name not in reads:
            fail(f"the build sets {name}, which provision.sh does not read")


def check_varfile(path, doc, variables):
    for key in attrs(doc):
        if key not in variables:
            fail(f"{path.name}: sets {key}, which is not a declared variable")
            continue
        decl, value = variables[key], doc[key]
        if decl.get("sensitive") is True:
            fail(f"{path.name}: sets the secret {key}; pass it as PKR_VAR_{key} instead")
        vtype = decl.get("type")
        ok = {
            "string": isinstance(value, str) and value.startswith('"'),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }.get(vtype, True)
        if not ok:
            fail(f"{path.name}: {key} = {value!r} is not a {vtype}")
    if path.name.startswith("example"):
        for name, decl in variables.items():
            if ("default" not in decl or decl["default"] is None) and decl.get("sensitive") is not True \
                    and name not in OPTIONAL_IN_EXAMPLE and name not in doc:
                fail(f"{path.name}: does not show {name}, which has no default")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: check_hcl.py PACKER_DIR", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
    for e in errors:
        print(f"check_hcl: {e}", file=sys.stderr)
    if errors:
        print(f"check_hcl: {len(errors)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("check_hcl: packer/ HCL parsed and cross-checked")
