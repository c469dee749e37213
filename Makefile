# cdnlab — two commands do everything on a fresh Debian 12 machine or the Vagrant VM:
#   sudo make demo    build the emulated CDN and run the demo experiments
#   sudo make test    run the test suite (unit tier, then the Mininet tier)
#   sudo make test-vm the Mininet tier's VM subset with netem and the kernel datapath, in a VM of Debian's
#                     kernel (for machines whose kernel has neither; see docs/troubleshooting.md)
#   sudo make vm-exec CMD='...'  one command (a benchmark, a grader) in that VM instead of the tier
#   sudo make test-cluster  the tests of a run across servers alone (docs/cluster.md; in `make test` but the slow one)
SHELL := /bin/bash
PYTHON_SYS ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Every Debian package cdnlab needs, in one list (chromium and its driver: the dashboard's browser tests
# and dash.js; ffmpeg: real DASH media, testbed/services/video_encode.py).
APT_PACKAGES := mininet openvswitch-switch iproute2 iperf3 ethtool iputils-ping tcpdump \
	unbound dnsutils nginx-light wrk nsd dnsperf curl iptables fping python3-venv python3-pip \
	chromium chromium-driver ffmpeg openssh-client openssh-server
# (ssh: a run across several servers reaches them as Mininet Cluster Edition does, docs/cluster.md; the
# tests run an sshd of their own on loopback, and the package's service is not needed)
PYTEST_ARGS ?=
# What `make test-vm` adds: QEMU, Debian's kernel (with sch_netem and openvswitch) and busybox for the
# guest's initramfs; virtme-ng (PyPI) boots it.
VM_APT_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static
VM_ARGS ?=

.PHONY: setup apt ovs venv demo test test-unit test-mininet test-vm test-cluster vm-exec vm-tools lint clean doctor

setup: apt ovs venv

# $(call apt_install,WHO,PACKAGES): install those of PACKAGES that are missing (one apt-get run)
define apt_install
	@missing=""; for p in $(2); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "$(1): installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "$(1): Debian packages present"; fi
endef

apt:
	$(call apt_install,cdnlab setup,$(APT_PACKAGES))

ovs:
	@if ovs-vsctl --timeout=5 show >/dev/null 2>&1; then echo "cdnlab setup: Open vSwitch running"; \
	else echo "cdnlab setup: starting Open vSwitch"; \
	  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null || \
	  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-ovs-vswitchd-mlockall; \
	  ovs-vsctl --timeout=10 show >/dev/null; fi

$(VENV)/.cdnlab-installed: pyproject.toml requirements-ryu.txt
	$(PYTHON_SYS) -m venv --system-site-packages $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q pbr wheel "setuptools<70"
	# Ryu 4.34's setup.py needs pbr and the old setuptools API: build it without isolation.
	$(PIP) install -q --no-build-isolation -r requirements-ryu.txt
	$(PIP) install -q -e '.[test]'
	touch $@

# A venv that does not run here (made on another machine, e.g. the host of a VirtualBox shared folder) is
# made anew.
venv:
	@if [ -f $(VENV)/.cdnlab-installed ] && ! $(PY) -c "import mininet, testbed" >/dev/null 2>&1; then \
	  echo "cdnlab setup: $(VENV) does not work on this machine; recreating it"; rm -rf $(VENV); fi
	@$(MAKE) --no-print-directory $(VENV)/.cdnlab-installed

demo: setup
	$(VENV)/bin/cdnlab demo

test: setup
	$(VENV)/bin/cdnlab clean --quiet
	@t0=$$(date +%s); if ! $(VENV)/bin/lint-imports --no-cache >/dev/null; then \
	  $(VENV)/bin/lint-imports --no-cache; exit 1; fi; \
	  echo "time per tier: import contracts $$(( $$(date +%s) - t0 )) s (lint-imports: every contract kept)"
	$(VENV)/bin/python -m pytest -m "not (cluster and slow)" $(PYTEST_ARGS)

vm-tools: venv
	$(call apt_install,cdnlab test-vm,$(VM_APT_PACKAGES))
	@[ -x $(VENV)/bin/vng ] || $(PIP) install -q virtme-ng

# The VM's last line is one JSON object (kernel, netem, datapath, passed, failed, skipped, errors, seconds).
test-vm: setup vm-tools
	$(VENV)/bin/cdnlab clean --quiet
	$(PY) tests/vm/run.py $(VM_ARGS)

# One shell command in the same VM instead of the tier (a benchmark, a grader), e.g.
#   sudo make vm-exec CMD='cdnlab bench links --links netem --json'
# CMD goes to the guest as typed: $(value CMD), single-quoted for the shell (make would otherwise expand
# $$? or $$HOME in it before any shell saw them).
shell_quote = '$(subst ','\'',$(1))'
vm-exec: setup vm-tools
	@$(if $(value CMD),true,{ echo "make vm-exec: give the command: make vm-exec CMD='...'"; exit 2; })
	$(VENV)/bin/cdnlab clean --quiet
	$(PY) tests/vm/run.py $(VM_ARGS) --exec $(call shell_quote,$(value CMD))

# The tests of a run across servers (a second server on this machine: tests/support/second_server.py), alone:
# about 5 minutes. `make test` runs them too (about 3 minutes), except the slow one (selection --quick on one
# server and on two, compared: about 100 s), which only this target runs.
test-cluster: setup
	$(VENV)/bin/cdnlab clean --quiet
	$(VENV)/bin/python -m pytest -m cluster $(PYTEST_ARGS)

test-unit: venv
	$(VENV)/bin/python -m pytest -m "not mininet" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check contract testbed controller experiments benchmarks tests
	$(VENV)/bin/lint-imports

doctor: venv
	$(VENV)/bin/cdnlab doctor

# Removes what cdnlab left running or configured (never your results/).
clean:
	@if [ -x $(VENV)/bin/cdnlab ]; then $(VENV)/bin/cdnlab clean; fi
	rm -rf .pytest_cache test-artifacts
