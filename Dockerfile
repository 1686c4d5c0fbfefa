# clipcrawl pipeline image: the package with every extra, plus Ray (the cluster engine: head, workers, driver).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clipcrawl ./clipcrawl
RUN pip install ".[all,ray]" && ray --version
ENTRYPOINT ["clipcrawl"]
CMD ["--help"]
