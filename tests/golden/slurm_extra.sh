#!/bin/bash
#SBATCH --job-name=rx-20261123-141502-3fa9
#SBATCH --chdir=/home/abc123/rx_jobs/rx-20261123-141502-3fa9
#SBATCH --output=/home/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.log
#SBATCH --error=/home/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.err
#SBATCH --mem=1536M
#SBATCH --time=1-12:00:00
#SBATCH --qos=debug
#SBATCH --mail-type=END
# rx_magic job rx-20261123-141502-3fa9 (slurm)
umask 077
cd /home/abc123/rx_jobs/rx-20261123-141502-3fa9/work || exit 96
shopt -s execfail
exec python3 /home/abc123/rx_jobs/.rx/runtime-0123456789abcdef/runner.py /home/abc123/rx_jobs/rx-20261123-141502-3fa9
code=$?
printf '%s\n' "$code" > /home/abc123/rx_jobs/rx-20261123-141502-3fa9/exit_code
exit "$code"
