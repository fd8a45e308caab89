# The interpretability workbench as a hosted app: the shipped model inside, hosted mode on, non-root.
#   docker build -t interp-workbench .
#   docker run --rm -p 8501:8501 interp-workbench          # then open http://localhost:8501
# Same steps as `make run` (pip install -r requirements.txt, then `streamlit run app.py`), except that torch is
# installed first from PyTorch's CPU index: PyPI's Linux torch pulls in several GB of CUDA libraries.
# Built and started on a machine with no registry and no docker by docker/build-here.sh and docker/run-here.sh;
# docs/container.md has the commands and the measured size and memory.
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
# torch's CPU build first, at requirements.txt's pin: the index serves it as torch 2.13.0+cpu, which satisfies
# requirements.txt's torch==2.13.0 (PEP 440 ignores a local label the pin does not name), so the second install
# keeps it. TORCH_WHEEL (anything pip installs: a wheel's path in a build volume, or its URL) replaces the index
# where download.pytorch.org cannot be reached; the last line fails the build if a CUDA torch got in anyway.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_WHEEL=
COPY requirements.txt ./
RUN if [ -n "$TORCH_WHEEL" ]; then python -m pip install "$TORCH_WHEEL"; \
    else python -m pip install --index-url "$TORCH_INDEX_URL" \
        "$(sed -n 's/^\(torch==[^ #]*\).*/\1/p' requirements.txt)"; fi \
 && python -m pip install -r requirements.txt \
 && python -c "import torch; assert torch.version.cuda is None, 'CUDA torch ' + torch.__version__" \
 && if python -m pip list 2>/dev/null | grep -i '^nvidia-'; then echo 'CUDA libraries installed' >&2; exit 1; fi

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
