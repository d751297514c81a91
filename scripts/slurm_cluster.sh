#!/usr/bin/env bash
# A one-node Slurm cluster (munge + slurmctld + slurmd) on this machine, for the batch tests.
#   scripts/slurm_cluster.sh start DIR   -> prints the SLURM_CONF path; idempotent
#   scripts/slurm_cluster.sh stop DIR
# Needs Debian's slurm-wlm and munge (scripts/setup.sh installs them) and root. Ports 6917/6918.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?state folder}
mkdir -p "$dir/state" "$dir/spool"
conf="$dir/slurm.conf"
host=$(hostname)
if [[ $cmd == stop ]]; then
  [[ -f $dir/slurmd.pid ]] && kill "$(cat "$dir/slurmd.pid")" 2>/dev/null || true
  [[ -f $dir/slurmctld.pid ]] && kill "$(cat "$dir/slurmctld.pid")" 2>/dev/null || true
  exit 0
fi
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
cat > "$conf" <<CONF
ClusterName=voxinfer
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmctldPort=6917
SlurmdPort=6918
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf
# munge: its folders must belong to the munge user.
if ! munge -n > /dev/null 2>&1; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge; chmod 0700 /var/log/munge; chmod 0711 /var/lib/munge
  [[ -f /etc/munge/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  su -s /bin/sh munge -c munged
  for _ in $(seq 20); do munge -n > /dev/null 2>&1 && break; sleep 0.5; done
fi
if ! sinfo > /dev/null 2>&1; then
  slurmctld -f "$conf"
  slurmd -f "$conf"
fi
for _ in $(seq 40); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then echo "$conf"; exit 0; fi
  sleep 0.5
done
echo "slurm_cluster: the node did not come up (see $dir/slurmctld.log, $dir/slurmd.log)" >&2
exit 1
