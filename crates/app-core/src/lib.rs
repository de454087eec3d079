//! Laneway's application core: settings, handlers, the chat start/status flow.
