# The delegate job template: a VM image in which delegate-guest starts when
# the host delivers a job's bootstrap. Three sources share one provisioning
# (scripts/provision.sh):
#   proxmox-clone.debian  clone a cloud-image template on Proxmox VE (fastest)
#   proxmox-iso.debian    install Debian from the netinst ISO with a preseed
#   qemu.debian           the same install as a local qcow2 (local QEMU provider)
#
#   packer init .
#   packer build -only='delegate.proxmox-clone.debian' -var-file=my.pkrvars.hcl .

# proxmox >= 1.2.2: it removes the clone source's cloud-init drive (on any
# storage) before making the template; README.md's cloud-init steps rely on it.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    proxmox = {
      version = ">= 1.2.2"
      source  = "github.com/hashicorp/proxmox"
    }
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

locals {
  guest_bin = coalesce(var.delegate_guest_bin, "${path.root}/../target/x86_64-unknown-linux-musl/release/delegate-guest")
  staging   = "/tmp/delegate-staging"

  template_description = "delegate job template, built ${timestamp()} by packer/delegate.pkr.hcl. Jobs run as user 'delegate'; delegate-guest starts when /run/delegate/bootstrap.json appears."

  preseed = templatefile("${path.root}/http/preseed.cfg.pkrtpl", {
    hostname = "delegate-template"
    username = var.ssh_username
    password = var.ssh_password == null ? "" : var.ssh_password
  })

  # Debian netinst (BIOS): leave the menu, boot the "auto" entry with our preseed.
  debian_boot_command = [
    "<esc><wait>",
    "auto url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/preseed.cfg netcfg/get_hostname=delegate-template netcfg/get_domain=localdomain<enter>",
  ]

  provision_env = [
    "DELEGATE_STAGING=${local.staging}",
    "DELEGATE_NODE_VERSION=${var.node_version}",
    "DELEGATE_CLAUDE_CODE_VERSION=${var.claude_code_version}",
    "DELEGATE_QGA_BLOCK_RPCS=${var.qga_block_rpcs}",
    "DELEGATE_EXTRA_PACKAGES=${var.extra_packages}",
    "DELEGATE_BUILD_USER=${var.ssh_username}",
  ]
}

source "proxmox-clone" "debian" {
  proxmox_url              = var.proxmox_url
  username                 = var.proxmox_token_id
  token                    = var.proxmox_token_secret
  insecure_skip_tls_verify = var.proxmox_insecure_skip_tls_verify
  node                     = var.proxmox_node
  pool                     = var.proxmox_pool
  task_timeout             = var.task_timeout

  clone_vm    = var.clone_vm
  clone_vm_id = var.clone_vm_id
  # The template must not depend on the cloud image it came from.
  full_clone = true

  vm_id                = var.template_vmid
  template_name        = var.template_name
  template_description = local.template_description
  tags                 = var.template_tags

  os              = "l26"
  cores           = var.cores
  memory          = var.memory
  cpu_type        = var.cpu_type
  scsi_controller = "virtio-scsi-single"
  qemu_agent      = true

  network_adapters {
    model    = "virtio"
    bridge   = var.proxmox_bridge
    vlan_tag = var.proxmox_vlan_tag
    firewall = var.proxmox_firewall
  }

  # One cloud-init drive in the template. The build VM uses the clone source's
  # own drive (ide2 in README.md's base image): through it the plugin hands
  # the guest its temporary SSH key and this DHCP ipconfig. Before converting
  # to a template the plugin (>= 1.2.2) deletes every cloud-init drive and the
  # ci* / ipconfigN settings; cloud_init then adds one fresh drive in the
  # first free IDE slot (ide0). The plugin does not set ipconfig0 on it, so
  # README.md's next step sets ipconfig0=ip=dhcp on the template, and
  # `delegate-host smoke` checks both. Cloud-init (cleaned at the end of the
  # build) then gives each clone its network, hostname and SSH host keys.
  cloud_init              = true
  cloud_init_storage_pool = var.proxmox_storage
  ipconfig {
    ip = "dhcp"
  }

  ssh_username = var.ssh_username
  ssh_timeout  = "15m"
}

source "proxmox-iso" "debian" {
  proxmox_url              = var.proxmox_url
  username                 = var.proxmox_token_id
  token                    = var.proxmox_token_secret
  insecure_skip_tls_verify = var.proxmox_insecure_skip_tls_verify
  node                     = var.proxmox_node
  pool                     = var.proxmox_pool
  task_timeout             = var.task_timeout

  boot_iso {
    type             = "ide"
    iso_url          = var.iso_url
    iso_file         = var.iso_file
    iso_checksum     = var.iso_checksum
    iso_storage_pool = var.proxmox_iso_storage
    # Packer uploads the ISO (Datastore.AllocateTemplate); no node-side download.
    iso_download_pve = false
    unmount          = true
  }

  vm_id                = var.template_vmid
  template_name        = var.template_name
  template_description = local.template_description
  tags                 = var.template_tags

  os              = "l26"
  cores           = var.cores
  memory          = var.memory
  cpu_type        = var.cpu_type
  scsi_controller = "virtio-scsi-single"
  qemu_agent      = true

  disks {
    type         = "scsi"
    storage_pool = var.proxmox_storage
    disk_size    = var.disk_size
    io_thread    = true
    discard      = true
    ssd          = true
  }

  network_adapters {
    model    = "virtio"
    bridge   = var.proxmox_bridge
    vlan_tag = var.proxmox_vlan_tag
    firewall = var.proxmox_firewall
  }

  http_content = {
    "/preseed.cfg" = local.preseed
  }
  boot_wait    = "10s"
  boot_command = local.debian_boot_command

  ssh_username = var.ssh_username
  ssh_password = var.ssh_password
  ssh_timeout  = "45m"
}

source "qemu" "debian" {
  iso_url      = var.iso_url
  iso_checksum = var.iso_checksum

  output_directory = var.qemu_output_directory
  vm_name          = "${var.template_name}.qcow2"
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio-scsi"
  disk_discard     = "unmap"
  net_device       = "virtio-net"
  accelerator      = var.qemu_accelerator
  cpus             = var.cores
  memory           = var.memory
  headless         = true

  http_content = {
    "/preseed.cfg" = local.preseed
  }
  boot_wait    = "10s"
  boot_command = local.debian_boot_command

  ssh_username     = var.ssh_username
  ssh_password     = var.ssh_password
  ssh_timeout      = "45m"
  shutdown_command = "sudo -n systemctl poweroff"
}

build {
  name = "delegate"
  sources = [
    "source.proxmox-clone.debian",
    "source.proxmox-iso.debian",
    "source.qemu.debian",
  ]

  provisioner "shell" {
    inline = ["rm -rf ${local.staging}", "mkdir -p ${local.staging}"]
  }

  # Units and helper scripts, then the static runner, then the provisioning.
  provisioner "file" {
    source      = "${path.root}/files/"
    destination = local.staging
  }

  provisioner "file" {
    source      = local.guest_bin
    destination = "${local.staging}/delegate-guest"
  }

  provisioner "shell" {
    script           = "${path.root}/scripts/provision.sh"
    environment_vars = local.provision_env
    execute_command  = "chmod +x {{ .Path }}; sudo -n env {{ .Vars }} {{ .Path }}"
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
  }
}
