#!/bin/bash
#SBATCH --job-name=fit_model
#SBATCH --chdir=/scratch/pawsey0001/abc123/rx_jobs/rx-20261123-141502-3fa9
#SBATCH --output=/scratch/pawsey0001/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.log
#SBATCH --error=/scratch/pawsey0001/abc123/rx_jobs/rx-20261123-141502-3fa9/scheduler.err
#SBATCH --partition=work
#SBATCH --account=pawsey0001
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --gres=gpu:1
#SBATCH --tmp=10G
#SBATCH --time=02:00:00
# rx_magic job rx-20261123-141502-3fa9 (slurm)
umask 077
cd /scratch/pawsey0001/abc123/rx_jobs/rx-20261123-141502-3fa9/work || exit 96
module load python/3.11.6
shopt -s execfail
exec /software/projects/pawsey0001/py311/bin/python3 /scratch/pawsey0001/abc123/rx_jobs/.rx/runtime-0123456789abcdef/runner.py /scratch/pawsey0001/abc123/rx_jobs/rx-20261123-141502-3fa9
code=$?
printf '%s\n' "$code" > /scratch/pawsey0001/abc123/rx_jobs/rx-20261123-141502-3fa9/exit_code
exit "$code"
