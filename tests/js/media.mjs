// matrix-js-sdk and the media repository (tests/clients/test_js_sdk_media.py): an avatar
// and a file uploaded with uploadContent, the avatar set on the profile, and both
// downloaded (and the avatar thumbnailed) through authenticated media, the URLs made
// by the SDK's own mxcUrlToHttp.
import { makeClient, runScenario, step } from "./lib/harness.mjs";

async function fetchMedia(client, url) {
    const resp = await fetch(url, { headers: { Authorization: `Bearer ${client.getAccessToken()}` } });
    const bytes = Buffer.from(await resp.arrayBuffer());
    return {
        url: url.replace(client.baseUrl, ""),
        status: resp.status,
        content_type: resp.headers.get("content-type"),
        disposition: resp.headers.get("content-disposition"),
        csp: resp.headers.get("content-security-policy"),
        base64: bytes.toString("base64"),
    };
}

await runScenario(async (params, result) => {
    const client = await makeClient(params.base_url, "mia");
    const avatar = Buffer.from(params.avatar_base64, "base64");

    const avatarUri = await step(result, "upload_avatar", async () => {
        const { content_uri: uri } = await client.uploadContent(new Blob([avatar], { type: "image/png" }),
            { name: "avatar.png", type: "image/png" });
        return uri;
    });
    await step(result, "set_avatar", async () => {
        await client.setAvatarUrl(avatarUri);
        return client.getProfileInfo(client.getUserId());
    });
    const fileUri = await step(result, "upload_file", async () => {
        const { content_uri: uri } = await client.uploadContent(
            new Blob([Buffer.from(params.file_text)], { type: "text/plain" }),
            { name: "notes.txt", type: "text/plain" });
        return uri;
    });
    await step(result, "media_config", () => client.getMediaConfig(true));
    await step(result, "download_avatar", () =>
        fetchMedia(client, client.mxcUrlToHttp(avatarUri, undefined, undefined, undefined, false, true, true)));
    await step(result, "thumbnail_avatar", () =>
        fetchMedia(client, client.mxcUrlToHttp(avatarUri, 32, 32, "crop", false, true, true)));
    await step(result, "download_file", () =>
        fetchMedia(client, client.mxcUrlToHttp(fileUri, undefined, undefined, undefined, false, true, true)));
});
