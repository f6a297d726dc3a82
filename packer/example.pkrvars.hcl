# Example inputs: copy to my.pkrvars.hcl (not committed), adjust, then
#   PKR_VAR_proxmox_token_secret=... packer build -only='delegate.proxmox-clone.debian' -var-file=my.pkrvars.hcl .
# Keep secrets out of this file: pass them as PKR_VAR_* environment variables.

# Packer needs the /api2/json path; the host's PROXMOX_URL takes it with or without.
proxmox_url      = "https://pve1.example.com:8006/api2/json"
proxmox_token_id = "packer@pve!template"
proxmox_node     = "pve1"
proxmox_pool     = "delegate"
proxmox_storage  = "local-lvm"
# The job bridge (README.md, network layout), not vmbr0: every clone keeps this NIC.
proxmox_bridge = "vmbr1"

template_name = "delegate-debian-12"
template_vmid = 9000

# proxmox-clone: a template made from the Debian 12 "genericcloud" image.
clone_vm     = "debian-12-genericcloud"
ssh_username = "debian"

# proxmox-iso and qemu: the netinst ISO (needs ssh_password, via PKR_VAR_ssh_password).
iso_url      = "https://cdimage.debian.org/cdimage/archive/12.12.0/amd64/iso-cd/debian-12.12.0-amd64-netinst.iso"
iso_checksum = "file:https://cdimage.debian.org/cdimage/archive/12.12.0/amd64/iso-cd/SHA256SUMS"

delegate_guest_bin = "../target/x86_64-unknown-linux-musl/release/delegate-guest"
node_version       = "22"
