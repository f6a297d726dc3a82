# Inputs of the delegate job template build. See README.md in this directory
# and example.pkrvars.hcl for a filled-in set.

# --- Proxmox VE connection -------------------------------------------------

variable "proxmox_url" {
  type        = string
  default     = null
  description = "Proxmox API URL including the path, e.g. https://pve.example.com:8006/api2/json. Packer needs the /api2/json path; the delegate host's PROXMOX_URL accepts the URL with or without it."

  validation {
    condition     = var.proxmox_url == null || can(regex("^https://[^/]+(:[0-9]+)?/api2/json/?$", var.proxmox_url))
    error_message = "The proxmox_url must look like https://HOST:8006/api2/json."
  }
}

variable "proxmox_token_id" {
  type        = string
  default     = null
  description = "API token id, USER@REALM!TOKENNAME (the token needs the build privileges listed in README.md)."

  validation {
    condition     = var.proxmox_token_id == null || can(regex("^[^\\s:/@]+@[A-Za-z][A-Za-z0-9._-]+![A-Za-z][A-Za-z0-9._-]+$", var.proxmox_token_id))
    error_message = "The proxmox_token_id must look like user@realm!tokenname."
  }
}

variable "proxmox_token_secret" {
  type        = string
  default     = null
  sensitive   = true
  description = "API token secret (a UUID). Prefer the PKR_VAR_proxmox_token_secret environment variable to a file."
}

variable "proxmox_insecure_skip_tls_verify" {
  type        = bool
  default     = false
  description = "Skip TLS verification of the Proxmox API. Only for a lab with a self-signed certificate."
}

variable "proxmox_node" {
  type        = string
  default     = null
  description = "Node the build VM runs on (and where the template lives)."
}

variable "proxmox_pool" {
  type        = string
  default     = null
  description = "Resource pool for the template (optional). Use the pool the delegate host's token works in."
}

variable "proxmox_storage" {
  type        = string
  default     = "local-lvm"
  description = "Storage for the template's disk and cloud-init drive. Linked clones need a storage that supports them (LVM-thin, ZFS, Ceph RBD, qcow2 on a directory)."
}

variable "proxmox_iso_storage" {
  type        = string
  default     = "local"
  description = "Storage (content type iso) that holds or receives the installer ISO (proxmox-iso only)."
}

variable "proxmox_bridge" {
  type        = string
  default     = null
  description = "Bridge (or SDN VNet) of the job network (vmbr1 in README.md's layout), never the management bridge: every clone keeps this NIC, since the host's token cannot change networks. No default: Proxmox builds stop until you choose one. The VM must reach the delegate host's CALLBACK_URL through it."
}

variable "proxmox_vlan_tag" {
  type        = string
  default     = null
  description = "VLAN tag on the bridge (optional)."
}

variable "proxmox_firewall" {
  type        = bool
  default     = false
  description = "Enable the Proxmox firewall on the VM's NIC. Clones inherit the flag and the template's firewall rules (see README.md, network)."
}

variable "task_timeout" {
  type        = string
  default     = "10m"
  description = "How long Packer waits for a Proxmox task (clone, convert to template)."
}

# --- The template -----------------------------------------------------------

variable "template_name" {
  type        = string
  default     = "delegate-debian-12"
  description = "Name of the resulting template; the delegate host's DEFAULT_VM_TEMPLATE names it (or its VMID)."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9.-]*$", var.template_name))
    error_message = "The template_name must be a valid DNS-style name (letters, digits, '-' and '.')."
  }
}

variable "template_vmid" {
  type        = number
  default     = null
  description = "VMID of the template (optional; the next free one otherwise). Keep it outside PROXMOX_VMID_RANGE."
}

variable "template_tags" {
  type        = string
  default     = "template;delegate_template"
  description = "Tags of the template, ';'-separated. Never 'delegate' or 'delegate-<instance>': those mark a host's job VMs."

  validation {
    condition     = length([for t in split(";", var.template_tags) : t if can(regex("^delegate(-|$)", t))]) == 0
    error_message = "The template must not carry the tag 'delegate' or 'delegate-...': those mark job VMs, which the host reaps."
  }
}

variable "cores" {
  type        = number
  default     = 2
  description = "vCPUs of the build VM and default of clones (the host sets cores per job)."
}

variable "memory" {
  type        = number
  default     = 2048
  description = "Memory in MiB of the build VM and default of clones (the host sets memory per job)."
}

variable "cpu_type" {
  type        = string
  default     = "x86-64-v2-AES"
  description = "Proxmox CPU type. 'host' is faster but ties clones to nodes with the same CPU."
}

variable "disk_size" {
  type        = string
  default     = "16G"
  description = "Disk size of ISO and QEMU builds. Jobs get more by resources.disk (the host resizes, the guest grows its root at boot)."
}

# --- Base image -------------------------------------------------------------

variable "clone_vm" {
  type        = string
  default     = null
  description = "proxmox-clone: name of the cloud-image template to start from (set this or clone_vm_id)."
}

variable "clone_vm_id" {
  type        = number
  default     = null
  description = "proxmox-clone: VMID of the cloud-image template to start from (set this or clone_vm)."
}

variable "iso_url" {
  type        = string
  default     = null
  description = "proxmox-iso and qemu: URL of a Debian 12 or 13 netinst ISO (or set iso_file for proxmox-iso)."
}

variable "iso_file" {
  type        = string
  default     = null
  description = "proxmox-iso: an ISO already on Proxmox storage, e.g. local:iso/debian-12.12.0-amd64-netinst.iso."
}

variable "iso_checksum" {
  type        = string
  default     = "none"
  description = "Checksum of the ISO, e.g. file:https://cdimage.debian.org/.../SHA256SUMS. 'none' skips the check."
}

variable "ssh_username" {
  type        = string
  default     = "debian"
  description = "Login for provisioning: the cloud image's default user (proxmox-clone), or the user the preseed creates (ISO builds). Locked at the end."
}

variable "ssh_password" {
  type        = string
  default     = null
  sensitive   = true
  description = "Password of ssh_username for ISO builds (the preseed sets it). Clone builds use a temporary key instead."
}

variable "qemu_accelerator" {
  type        = string
  default     = "kvm"
  description = "qemu: accelerator, kvm or tcg (slow, for hosts without /dev/kvm)."
}

variable "qemu_output_directory" {
  type        = string
  default     = "output-delegate-qemu"
  description = "qemu: directory for the resulting qcow2 image."
}

# --- What goes into the image -------------------------------------------------

variable "delegate_guest_bin" {
  type        = string
  default     = null
  description = "Path of the static delegate-guest binary. Default: the musl release build in ../target."
}

variable "node_version" {
  type        = string
  default     = "22"
  description = "Node.js for Claude Code: a major (latest release of that line) or an exact version."
}

variable "claude_code_version" {
  type        = string
  default     = "latest"
  description = "npm version of @anthropic-ai/claude-code to install."
}

variable "qga_block_rpcs" {
  type        = string
  default     = "guest-exec,guest-exec-status"
  description = "Guest-agent commands blocked in the image, comma-separated ('' blocks none). guest-file-open/-write/-close stay allowed: the host needs them."
}

variable "extra_packages" {
  type        = string
  default     = ""
  description = "More Debian/Ubuntu packages for the image, space-separated."
}
