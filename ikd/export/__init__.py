"""`ikd export`: translation-only packages (safetensors + JSON) and CTranslate2 models."""
