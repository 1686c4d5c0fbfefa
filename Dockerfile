# clipcrawl pipeline image: the package with every extra, plus Ray (the cluster engine: head, workers, driver).
# TORCH=cpu (the default) installs PyTorch's CPU-only wheels first (~0.8 GB instead of ~6 GB of CUDA libraries);
# TORCH=cuda keeps the CUDA wheels from PyPI (docker-compose.yml's `gpu` profile builds clipcrawl:gpu with it).
FROM python:3.11-slim
ARG TORCH=cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clipcrawl ./clipcrawl
RUN if [ "$TORCH" = "cpu" ]; then \
      pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu; \
    fi && pip install ".[all,ray]" && ray --version
ENTRYPOINT ["clipcrawl"]
CMD ["--help"]
