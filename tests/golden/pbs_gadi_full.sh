#!/bin/bash
#PBS -N fit_model_ensem
#PBS -P ab12
#PBS -q normal
#PBS -l ncpus=4
#PBS -l mem=8GB
#PBS -l walltime=02:00:00
#PBS -l jobfs=10GB
#PBS -l wd
#PBS -l storage=gdata/hh5+scratch/ab12
#PBS -j n
#PBS -o /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.log
#PBS -e /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.err
# rx_magic job rx-20261123-141502-3fa9 (pbs, profile gadi)
# Gadi cost at most 16 SU: 2 SU/h x 4 cores x 2:00:00 in normal
umask 077
cd /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/work || exit 96
module use /g/data/hh5/public/modules
module load conda/analysis3-24.07
shopt -s execfail
exec python3 /scratch/ab12/abc123/rx_jobs/.rx/runtime-0123456789abcdef/runner.py /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9
code=$?
printf '%s\n' "$code" > /scratch/ab12/abc123/rx_jobs/rx-20261123-141502-3fa9/exit_code
exit "$code"
