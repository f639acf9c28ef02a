# si_lightning on a CUDA machine: docker build -t si-lightning . && docker run --gpus all si-lightning \
#   si-lightning fit -c configs/experiments/digits.yaml --trainer.accelerator gpu
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/si_lightning
# The dependencies first, so a code change does not reinstall torch.
COPY pyproject.toml README.md ./
COPY si_lightning/__init__.py si_lightning/__init__.py
RUN pip install -e '.[dev]'
COPY . .
RUN pip install --no-deps -e .

CMD ["python", "-m", "si_lightning.demo"]
