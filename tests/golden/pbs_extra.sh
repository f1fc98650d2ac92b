#!/bin/bash
#PBS -N rx-141502-3fa9
#PBS -q workq
#PBS -l walltime=00:30:00
#PBS -j n
#PBS -o /home/123/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.log
#PBS -e /home/123/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.err
#PBS -m abe
#PBS -M someone@example.org
#PBS -W umask=027
# rx_magic job rx-20261123-141502-3fa9 (pbs)
umask 077
cd /home/123/abc123/rx_jobs/rx-20261123-141502-3fa9/work || exit 96
shopt -s execfail
exec python3 /home/123/abc123/rx_jobs/.rx/runtime-0123456789abcdef/runner.py /home/123/abc123/rx_jobs/rx-20261123-141502-3fa9
code=$?
printf '%s\n' "$code" > /home/123/abc123/rx_jobs/rx-20261123-141502-3fa9/exit_code
exit "$code"
