#!/bin/bash
#PBS -N rx-141502-3fa9
#PBS -P ab12
#PBS -q gpuvolta
#PBS -l ncpus=24
#PBS -l mem=190GB
#PBS -l walltime=12:00:00
#PBS -l ngpus=2
#PBS -l wd
#PBS -l storage=gdata/ab12+gdata/xy11+scratch/ab12
#PBS -j n
#PBS -o /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.log
#PBS -e /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.err
# rx_magic job rx-20261123-141502-3fa9 (pbs, profile gadi)
# Gadi cost at most 864 SU: 3 SU/h x 24 cores x 12:00:00 in gpuvolta
umask 077
cd /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/work || exit 96
shopt -s execfail
exec /g/data/xy11/apps/python/3.11.7/bin/python3 /scratch/ab12/abc123/rx_jobs/.rx/runtime-0123456789abcdef/runner.py /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9
code=$?
printf '%s\n' "$code" > /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/exit_code
exit "$code"
