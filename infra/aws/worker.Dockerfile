# Stampede load-test worker: Locust, the project's load tests and the worker agent.
# The container command is set per run (ECS container override / EC2 user data):
#   python -m stampede.workers.agent --master-host H --master-port P --locustfiles F --expires-at EPOCH
#
# Build from the repository root (no image is built by the tests):
#   docker build -f infra/aws/worker.Dockerfile -t stampede-worker:$(git rev-parse --short HEAD) .
#   aws ecr get-login-password | docker login --username AWS --password-stdin <account>.dkr.ecr.<region>.amazonaws.com
#   docker tag stampede-worker:<sha> <account>.dkr.ecr.<region>.amazonaws.com/stampede-worker:<sha>
#   docker push <account>.dkr.ecr.<region>.amazonaws.com/stampede-worker:<sha>
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Locust and PyYAML at the versions pinned in the lock file, so the worker runs the exact Locust the
# master runs (not the whole lock: Airflow and the rest are not needed on a worker).
COPY requirements.txt ./
RUN grep -iE '^(locust|pyyaml)==' requirements.txt > worker-requirements.txt \
    && pip install -r worker-requirements.txt

# Only what a worker needs: the package (agent, Locust plugin) and the load tests.
COPY pyproject.toml ./
COPY plugins/ plugins/
COPY loadtests/ loadtests/
COPY cleanup/ cleanup/
COPY infra/__init__.py infra/__init__.py
RUN pip install --no-deps -e .

RUN useradd --create-home --uid 10001 stampede
USER stampede

# Overridden by every run; shows the agent's usage when started by hand.
CMD ["python", "-m", "stampede.workers.agent", "--help"]
