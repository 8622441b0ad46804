//! The model store's routes: list, upload (validated on a blocking
//! thread, staged, then moved in), load and delete.

use super::*;

pub(super) async fn models_list(State(st): State<AppState>, _a: Authed) -> Json<serde_json::Value> {
    let status = st.api.status().model;
    let dir = st.models_dir.clone();
    let active = status.active.clone();
    let list = tokio::task::spawn_blocking(move || models::list(&dir, active.as_deref()))
        .await
        .unwrap_or_default();
    Json(
        json!({ "models": list, "status": status, "max_upload_bytes": st.config.max_upload_bytes }),
    )
}

/// Removes the staging folder unless the upload was installed.
pub(super) struct Staging(Option<PathBuf>);
impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

pub(super) async fn models_upload(
    State(st): State<AppState>,
    _a: Authed,
    mut mp: Multipart,
) -> Result<Json<serde_json::Value>, HttpError> {
    use tokio::io::AsyncWriteExt;
    let limit = st.config.max_upload_bytes;
    let token = auth::random_token();
    let staging_path = st.models_dir.join(format!(".staging-{}", &token[..16]));
    tokio::fs::create_dir_all(&staging_path)
        .await
        .map_err(internal)?;
    let staging = Staging(Some(staging_path.clone()));
    let mut name: Option<String> = None;
    let mut archive: Option<(PathBuf, String)> = None;
    let mut total = 0u64;
    let mp_err = |e: axum::extract::multipart::MultipartError| {
        let code = e.status();
        if code == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError(
                code,
                ModelError::TooLarge {
                    limit_mb: limit / (1024 * 1024),
                }
                .to_string(),
            )
        } else {
            HttpError(code, e.body_text())
        }
    };
    while let Some(mut field) = mp.next_field().await.map_err(mp_err)? {
        let field_name = field.name().unwrap_or("").to_string();
        if field_name == "name" {
            let n = field.text().await.map_err(mp_err)?;
            let n = n.trim();
            if !n.is_empty() {
                name = Some(models::check_name(n)?.to_string());
            }
            continue;
        }
        let Some(filename) = field.file_name().map(str::to_string) else {
            continue;
        };
        if filename.is_empty() {
            continue;
        }
        let target = match models::upload_kind(&filename)? {
            UploadKind::File(base) => staging_path.join(base),
            UploadKind::Archive => {
                if archive.is_some() {
                    return Err(HttpError(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "upload one .tar.gz at a time".into(),
                    ));
                }
                let p = staging_path.join(".upload.tar.gz");
                archive = Some((p.clone(), filename.clone()));
                p
            }
        };
        let mut f = tokio::fs::File::create(&target).await.map_err(internal)?;
        while let Some(chunk) = field.chunk().await.map_err(mp_err)? {
            total += chunk.len() as u64;
            if total > limit {
                return Err(ModelError::TooLarge {
                    limit_mb: limit / (1024 * 1024),
                }
                .into());
            }
            f.write_all(&chunk).await.map_err(internal)?;
        }
        f.sync_all().await.map_err(internal)?;
    }
    if let Some((path, filename)) = &archive {
        let (p, dest) = (path.clone(), staging_path.clone());
        let fname = filename.clone();
        tokio::task::spawn_blocking(move || {
            let r = models::extract_archive(&p, &dest, limit).map_err(|e| match e {
                ModelError::Rejected { reason, .. } => ModelError::Rejected {
                    file: fname,
                    reason,
                },
                e => e,
            });
            let _ = std::fs::remove_file(&p);
            r
        })
        .await
        .map_err(internal)??;
    }
    let has = |p: &str| staging_path.join(p).is_file();
    if !has("model_metadata.json") {
        return Err(ModelError::Rejected {
            file: "model_metadata.json".into(),
            reason: "missing from the upload".into(),
        }
        .into());
    }
    if !has("model.onnx") && !has("model.pb") && !has("agent/model.pb") {
        return Err(ModelError::Rejected {
            file: "model.onnx".into(),
            reason: "missing from the upload (or agent/model.pb in a console export)".into(),
        }
        .into());
    }
    let name = match name {
        Some(n) => n,
        None => {
            let from_archive = archive.as_ref().map(|(_, f)| {
                f.trim_end_matches(".tar.gz")
                    .trim_end_matches(".tgz")
                    .to_string()
            });
            match from_archive.filter(|n| models::check_name(n).is_ok()) {
                Some(n) => n,
                None => format!("model-{}", models::now_unix()),
            }
        }
    };
    let dest = st.models_dir.join(&name);
    if dest.exists() {
        return Err(ModelError::Exists(name).into());
    }
    let api = st.api.clone();
    let sp = staging_path.clone();
    let summary = tokio::task::spawn_blocking(move || api.validate_model(&sp))
        .await
        .map_err(internal)?
        .map_err(|e| HttpError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    models::write_info(&staging_path, &summary)?;
    std::fs::rename(&staging_path, &dest).map_err(internal)?;
    std::mem::forget(staging);
    tracing::info!("installed model {name} ({})", summary.action_space);
    Ok(Json(
        json!({ "name": name, "path": dest, "summary": summary }),
    ))
}

pub(super) fn model_path(st: &AppState, name: &str) -> Result<PathBuf, HttpError> {
    let name = models::check_name(name)?;
    let p = st.models_dir.join(name);
    if !p.is_dir() {
        return Err(ModelError::NotFound(name.to_string()).into());
    }
    Ok(p)
}

pub(super) async fn models_load(
    State(st): State<AppState>,
    _a: Authed,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let p = model_path(&st, &name)?;
    st.api.load_model(&p)?;
    Ok(Json(json!({ "ok": true, "status": st.api.status().model })))
}

pub(super) async fn models_delete(
    State(st): State<AppState>,
    _a: Authed,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let p = model_path(&st, &name)?;
    let m = st.api.status().model;
    let in_use = |x: &Option<String>| x.as_deref().is_some_and(|a| models::same_path(a, &p));
    if in_use(&m.active) || (m.state == ModelState::Loading && in_use(&m.requested)) {
        return Err(ModelError::InUse(name).into());
    }
    tokio::fs::remove_dir_all(&p).await.map_err(internal)?;
    Ok(Json(json!({ "ok": true })))
}
