# shellcheck shell=bash disable=SC2119,SC2120 # cluster_down takes an optional --force
# .ci/cluster.sh: launchers for the srun/mpirun tests. Sourced, not run:
#
#   source .ci/cluster.sh             # in .ci/run, after `cd` to the repo
#   trap 'cluster_down' EXIT          # (merge with any other EXIT trap)
#
# 1. Starts the two-node Slurm cluster of shared/cluster (slurm-up.sh
#    --nodes 2; it installs munge/Slurm from Debian if they are missing)
#    and exports what it prints:
#      SLURM_CONF  PROCPOOL_SLURM_DIR  PROCPOOL_SLURM_NODES=2
#      PROCPOOL_SLURM_ADDR=10.200.0.1  (where tasks on both nodes reach this
#      shell; the host name resolves to 127.0.0.1 on the second node, so
#      advertise this address, never the host name)
# 2. Installs Open MPI (Debian's openmpi-bin) if `mpirun` is missing and
#    exports the settings that make a local `mpirun -n N cmd` work as root,
#    with more ranks than cores, and without ssh/rsh installed.
# 3. Defines cluster_down, for the EXIT trap. It stops the cluster only if
#    this file started it; a cluster that was already up (for example one a
#    developer keeps running on the same machine) is left running.
#    `cluster_down --force` stops it regardless.
#
# The shared directory is $PROCPOOL_SHARED_DIR if set, else the `shared`
# directory next to the repository's parent (<repo>/../shared) if that
# exists, else /work/shared.
#
# Needs root (Debian 12). Under CI=true a failure prints an error and returns
# 1; otherwise it prints a warning and returns 0 without a cluster.

_pp_cluster_started=0
_pp_shared_dir=

_pp_log() { printf 'cluster.sh: %s\n' "$*" >&2; }

_pp_find_shared() {
  local here cand
  if [[ -n ${PROCPOOL_SHARED_DIR-} ]]; then
    cand=$PROCPOOL_SHARED_DIR
  else
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1
    cand=$here/shared
    [[ -d $cand/cluster ]] || cand=/work/shared
  fi
  if [[ ! -x $cand/cluster/slurm-up.sh || ! -x $cand/cluster/slurm-down.sh ]]; then
    _pp_log "error: no cluster scripts in $cand/cluster (set PROCPOOL_SHARED_DIR)"
    return 1
  fi
  _pp_shared_dir=$(cd "$cand" && pwd)
}

_pp_install_mpi() {
  command -v mpirun >/dev/null && return 0
  local pkgs=(openmpi-bin)
  _pp_log "installing ${pkgs[*]} (mpirun not found)"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only when the package lists cannot serve the install
  # (none yet, or stale ones that point at versions the mirror dropped).
  if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null || return 1
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null || return 1
  fi
  command -v mpirun >/dev/null
}

# slurm-up.sh only notices a taken port if the daemon's bind fails before it
# writes its pid file; otherwise (seen with a listener holding 6817) it waits
# for idle nodes, 10 s per sinfo that the squatter never answers, for up to
# 50 minutes. So check first, unless the directory is one of slurm-up's (then
# the port may be our own slurmctld, and slurm-up reuses or restarts it).
_pp_ports_free() {
  local p
  [[ -e ${PROCPOOL_SLURM_DIR:-/tmp/procpool-slurm}/.made-by-slurm-up ]] && return 0
  for p in 6817 6818; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      _pp_log "error: port $p is in use; slurm-up.sh needs 6817 and 6818 free"
      return 1
    fi
  done
}

_pp_cluster_up() {
  local out err rc=0
  [[ $(id -u) == 0 ]] || { _pp_log "error: must run as root"; return 1; }
  _pp_find_shared || return 1
  _pp_ports_free || return 1

  # stdout carries only `export` lines; stderr (progress) is shown after.
  # Normal: 0.4 s (reused), 1 s (packages present), 20 s (bare machine).
  err=$(mktemp) || return 1
  out=$(timeout 300 "$_pp_shared_dir/cluster/slurm-up.sh" --nodes 2 2>"$err") || rc=$?
  cat "$err" >&2
  if ((rc != 0)); then
    rm -f "$err"
    if ((rc == 124)); then
      _pp_log "error: slurm-up.sh --nodes 2 did not finish within 300 s"
    else
      _pp_log "error: slurm-up.sh --nodes 2 failed (exit $rc)"
    fi
    # slurm-up.sh cleans up after its own errors, but not when it is killed.
    _pp_cluster_started=1
    return 1
  fi
  grep -q 'reusing the running cluster' "$err" || _pp_cluster_started=1
  rm -f "$err"
  [[ $out == *"export PROCPOOL_SLURM_ADDR="* ]] || {
    _pp_log "error: unexpected output from slurm-up.sh: $out"
    return 1
  }
  eval "$out"
  export SLURM_CONF PROCPOOL_SLURM_DIR PROCPOOL_SLURM_NODES PROCPOOL_SLURM_ADDR

  if ! _pp_install_mpi; then
    _pp_log "error: could not install openmpi-bin"
    return 1
  fi
  # Documented env forms of `mpirun --allow-run-as-root` (both are needed).
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # = --oversubscribe: more ranks than the 2 cores (else "not enough slots").
  export OMPI_MCA_rmaps_base_oversubscribe=1
  # Launch locally only. Without this, Open MPI 4.1 aborts even a
  # single-host run when neither ssh nor rsh is installed ("plm_rsh_agent:
  # ssh : rsh ... could not be found", exit 243).
  export OMPI_MCA_plm=isolated
  # Debian's /etc/openmpi/openmpi-mca-params.conf already sets this (and
  # excludes openib/ucx/ofi); repeated in case that file is changed.
  export OMPI_MCA_btl_base_warn_component_unused=0

  _pp_log "srun: $(sinfo -h -N -o '%N/%t' | tr '\n' ' ')(dial-back address $PROCPOOL_SLURM_ADDR); $(mpirun --version | head -n 1)"
}

# cluster_down [--force]: stop the cluster if this file started it (or with
# --force). Never fails, so that it cannot change the exit code of an EXIT
# trap.
cluster_down() {
  local down
  if [[ ${1-} != --force ]] && ((_pp_cluster_started == 0)); then
    [[ -n ${PROCPOOL_SLURM_DIR-} ]] &&
      _pp_log "leaving the cluster in $PROCPOOL_SLURM_DIR up (it was already running; cluster_down --force stops it)"
    return 0
  fi
  down=${_pp_shared_dir:-${PROCPOOL_SHARED_DIR:-/work/shared}}/cluster/slurm-down.sh
  if [[ -x $down ]]; then
    "$down" || _pp_log "warning: $down failed"
  else
    _pp_log "warning: $down not found; cluster not stopped"
  fi
  _pp_cluster_started=0
  return 0
}

if ! _pp_cluster_up; then
  cluster_down # only what this file started
  unset SLURM_CONF PROCPOOL_SLURM_DIR PROCPOOL_SLURM_NODES PROCPOOL_SLURM_ADDR
  if [[ ${CI-} == true ]]; then
    _pp_log "error: the Slurm/MPI test cluster did not start (CI=true)"
    return 1
  fi
  _pp_log "warning: no Slurm/MPI test cluster; srun/mpirun tests cannot run"
fi
return 0
