# The interpretability workbench as a hosted app: the shipped model inside, hosted mode on, non-root.
#   docker build -t interp-workbench .
#   docker run --rm -p 8501:8501 interp-workbench          # then open http://localhost:8501
# Same steps as `make run`: pip install -r requirements.txt, then `streamlit run app.py`.
# Not built on the machines this project was written on (no container engine there); see README "Deploying".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INTERP_HOSTED=1 \
    HF_HOME=/home/app/.cache/huggingface

RUN useradd --create-home --uid 1000 app
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt ./
RUN python -m pip install -r requirements.txt

# The app (read-only for the app user) and the shipped model organism (safetensors + tokenizer).
COPY .streamlit/config.toml .streamlit/config.toml
COPY app.py ./
COPY interp_core/ interp_core/
COPY pages/ pages/
COPY models/organism/ models/organism/

USER app
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD python -c "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4); sys.exit(0 if r.status == 200 else 1)"
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
