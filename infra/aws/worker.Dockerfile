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

# What a worker runs (Locust, gevent, pyzmq, PyYAML, psutil), from requirements-worker.txt: the
# worker's lock, compiled with the master's lock (requirements.txt) as its constraints, so every
# package a worker shares with the master is the exact version the master runs (`make lock`;
# a test checks the pins agree). Airflow and the rest are not needed on a worker.
COPY requirements-worker.txt ./
RUN pip install -r requirements-worker.txt

# Only what a worker needs: the package (agent, Locust plugin) and the load tests.
COPY pyproject.toml ./
COPY plugins/ plugins/
COPY loadtests/ loadtests/
COPY cleanup/ cleanup/
COPY infra/ infra/
RUN pip install --no-deps .

RUN useradd --create-home --uid 10001 stampede
USER stampede

# Overridden by every run; shows the agent's usage when started by hand.
CMD ["python", "-m", "stampede.workers.agent", "--help"]
