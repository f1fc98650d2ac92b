#!/bin/bash
#SBATCH --job-name=rx-20261123-141502-3fa9
# rx_magic job rx-20261123-141502-3fa9 (slurm)
umask 077
cd '/home/abc123/my "rx" jobs 100%/rx-20261123-141502-3fa9/work' || exit 96
shopt -s execfail
exec python3 '/home/abc123/my "rx" jobs 100%/.rx/runtime-0123456789abcdef/runner.py' '/home/abc123/my "rx" jobs 100%/rx-20261123-141502-3fa9'
code=$?
printf '%s\n' "$code" > '/home/abc123/my "rx" jobs 100%/rx-20261123-141502-3fa9/exit_code'
exit "$code"
