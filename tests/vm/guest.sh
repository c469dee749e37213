#!/bin/bash
# Runs inside the VM that `make test-vm` boots (tests/vm/run.py): Debian's own kernel, so netem and Open
# vSwitch's kernel datapath exist. Loads both modules, starts OVS on the kernel datapath with its database
# on tmpfs (the guest sees the host's files read-only, and ovsdb-server cannot make its temporary file on
# the shared 9p /tmp), then runs the Mininet tier's VM subset (`-m "vm and not slow"`) with --links netem --datapath kernel.
# Writes test-artifacts/vm/guest.json (what the guest had) and junit.xml (what ran); the host reads both.
# Usage: guest.sh REPO ACCEL [PYTEST_ARGS...]  or  guest.sh REPO ACCEL --exec FILE  (ACCEL: kvm or tcg; under tcg timing is coarse, and the
# tests that measure time assert only what TCG honours: see the exact_timing fixture)
set -u
repo=$1; accel=$2; shift 2
out=$repo/test-artifacts/vm
mkdir -p "$out"
facts() {  # guest.json: kernel, netem, datapath, and the step that failed if one did
  printf '{"kernel": "%s", "netem": %s, "datapath": "%s", "failed_step": "%s"}\n' \
    "$(uname -r)" "$netem" "$datapath" "$1" > "$out/guest.json"
}
netem=false; datapath=none
modprobe sch_netem && netem=true
modprobe openvswitch || { facts "modprobe openvswitch"; exit 3; }
modprobe tun  # /dev/net/tun: the SSH tunnels of a cut link between servers (tests/mininet/test_cluster_cdn.py)
mkdir -p /run/ovs /var/run/openvswitch
ovsdb-tool create /run/ovs/conf.db /usr/share/openvswitch/vswitch.ovsschema || { facts "ovsdb-tool create"; exit 4; }
/usr/share/openvswitch/scripts/ovs-ctl start --db-file=/run/ovs/conf.db --system-id=random --no-mlockall \
  > "$out/ovs-start.log" 2>&1 || { facts "ovs-ctl start"; exit 4; }
ovs-vsctl --timeout=10 add-br cdnvmprobe -- set bridge cdnvmprobe datapath_type=system \
  && ovs-dpctl show | grep -q "system@ovs-system" && datapath=kernel
ovs-vsctl --timeout=10 del-br cdnvmprobe
[ "$netem" = true ] && [ "$datapath" = kernel ] || { facts "netem or kernel datapath missing"; exit 5; }
facts ""
cd "$repo" || exit 6
export CDNLAB_TEST_LINKS=netem CDNLAB_TEST_DATAPATH=kernel
# TCG runs the guest about ten times slower: deadlines for things to come up stretch, measurements do not
[ "$accel" = tcg ] && export CDNLAB_TIMING=coarse CDNLAB_TIMEOUT_SCALE=4
if [ "${1:-}" = --exec ]; then  # run.py --exec: one command instead of the tier; its status in exec.rc
  export PATH="$repo/.venv/bin:$PATH"
  bash -o pipefail "$2" 2>&1 | tee "$out/exec.log"
  rc=${PIPESTATUS[0]}
  echo "$rc" > "$out/exec.rc"
  exit "$rc"
fi
# The bandwidth trace's relay case runs in `make test` (the relay is the same process on either datapath);
# here, where students' links are netem, it cost 165 s of CI's 60 minutes under TCG: its netem case runs.
# `slow` VM tests (a cut link between two servers with netem: 7 min) run when asked: VM_ARGS='-- -m vm -k NAME'.
.venv/bin/python -m pytest -v -p no:cacheprovider -m "vm and not slow" --links netem --datapath kernel \
  --deselect "tests/mininet/test_traces_mininet.py::test_a_trace_changes_the_links_rate_on_schedule[relay]" \
  --junitxml="$out/junit.xml" -o junit_family=xunit2 "$@" 2>&1 | tee "$out/pytest.log"
exit "${PIPESTATUS[0]}"
