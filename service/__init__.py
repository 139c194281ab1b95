"""The application layer: what the app holds (`state.AppState`) and every action a tab, a gradio_client
caller or a Python script takes on it. No Gradio here; the tabs in `ui/` only wire widgets to these calls."""
